// Package flow is Weft's workflow model: the definition users save, its validation, and the compiled form
// the engine runs.
//
//	body ──Parse──▶ *Definition ──Compile──▶ *Graph ──(per execution)──▶ Eval / EvalBool / Render
//	        (every problem, by JSON path)      (once per workflow version)
//
// Parse decodes a JSON body and reports every problem it finds as an events.FieldError naming the JSON
// path ("nodes[3].config.url", "edges[2].to"); the caller wraps them with events.Invalid. It checks the
// shape (known fields, JSON types, sizes), node ids and types, edges (known ends, no self-loop, no
// duplicate, no cycle, branches exactly on edges out of a CONDITION), the common config keys (retry,
// timeoutMs, onError) and each node type's config, rejecting unknown keys so typos fail at save time.
//
// Compile runs the same checks on a Definition and builds a Graph: nodes by id with their incoming and
// outgoing edges, entry nodes, a topological order, the run policy of each node, and compiled
// expressions: CONDITION's expression, TRANSFORM's set values, and a Template for every other config
// string that embeds {{ expr }} (INPUT configs excepted: their defaults are literal).
//
// # Expressions
//
// Expressions are expr-lang (github.com/expr-lang/expr) with only three names in scope: input (the
// execution's inputs), nodes (nodes.<id>.output, nodes.<id>.status) and execution (execution.id,
// execution.workflowId), plus expr's builtins, none of which does I/O. An expression holds at most
// MaxExpressionBytes bytes and MaxExpressionNodes AST nodes. nodes may only be indexed by a literal id
// (nodes.fetch or nodes["fetch"]), and that node must be upstream of the one whose config holds the
// expression; so each CompiledNode knows exactly which results it reads (Refs). $env is refused.
//
// A string that is exactly one {{ expr }} (whitespace around it allowed) renders to the expression's value
// with its type; any other template renders to text, strings as they are and other values as JSON (nil as
// null). "}}" inside a string or map literal of the expression does not end it; "{{" without a matching
// "}}" is an error. There is no escape for a literal "{{". Only string values are templates, never object keys.
//
// # Evaluation limits
//
// Eval, EvalBool and Render run in the calling goroutine with expr's memory budget (MemoryBudget), and
// Render builds at most MaxRenderBytes of text per call. The expr v1.17 VM offers no way to interrupt a
// running program, so there is no wall-clock limit: an expression's work is bounded by its size and the
// memory budget. The budget counts ranges, array and map literals and builtin results but not strings
// built by repeated concatenation, so a hostile expression can still spend CPU and memory; the engine
// should run nodes in workers whose loss it tolerates.
//
// ValidateInputs applies the INPUT fields to an execution's inputs at submit time.
package flow
