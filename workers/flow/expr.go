package flow

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/vm"
)

// Limits of expressions and of their evaluation.
const (
	MaxExpressionBytes = 4096      // bytes of source in one expression
	MaxExpressionNodes = 10000     // AST nodes in one expression (expr.MaxNodes)
	MemoryBudget       = 1_000_000 // expr VM memory budget per evaluation (elements of ranges, arrays, maps...)
	MaxRenderBytes     = 1 << 20   // bytes of text one Render call may build by concatenating template parts
)

// Scope is what an expression can see: the execution's inputs, the results of upstream nodes, and the execution.
type Scope struct {
	Input     map[string]any
	Nodes     map[string]NodeResult
	Execution ExecutionInfo
	vars      map[string]any // the environment, when made once by Prepared
	budget    *budget        // the bounds of its evaluations, set by Bounded
}

// Prepared returns s with its environment made once, for a scope that
// evaluates several expressions: each would otherwise make its own.
func (s Scope) Prepared() Scope {
	s.vars = s.newEnv()
	return s
}

// PreparedIn is Prepared with the environment made in env, which it
// clears first: a caller that evaluates one scope after another reuses one
// map. No result refers to it ($env is not available), so reusing it
// after an evaluation changes nothing that evaluation returned.
func (s Scope) PreparedIn(env map[string]any) Scope {
	clear(env)
	env["input"], env["nodes"], env["execution"] = s.Input, s.Nodes, s.Execution
	if s.budget != nil {
		env[budgetName] = s.budget
	}
	s.vars = env
	return s
}

// NodeResult is an upstream node as seen by expressions: nodes.<id>.output and nodes.<id>.status.
type NodeResult struct {
	Output any    `json:"output" expr:"output"`
	Status string `json:"status" expr:"status"`
}

// ExecutionInfo is the execution as seen by expressions: execution.id and execution.workflowId.
type ExecutionInfo struct {
	ID         string `json:"id" expr:"id"`
	WorkflowID string `json:"workflowId" expr:"workflowId"`
}

// env returns the expr environment of s; its shape must match envShape.
func (s Scope) env() map[string]any {
	if s.vars != nil {
		return s.vars
	}
	return s.newEnv()
}

func (s Scope) newEnv() map[string]any {
	env := map[string]any{"input": s.Input, "nodes": s.Nodes, "execution": s.Execution}
	if s.budget != nil {
		env[budgetName] = s.budget
	}
	return env
}

// bounds returns the environment of s and the budget its evaluation
// spends: the scope's, or a fresh one with DefaultEvalTimeout.
func (s Scope) bounds() (map[string]any, *budget) {
	env, b := s.env(), s.budget
	if b == nil {
		b = newBudget(context.Background(), 0)
		env[budgetName] = b
	}
	return env, b
}

// envShape gives the checker the types of the only three names in scope. Unknown names, and unknown
// fields of nodes.<id> or execution, fail to compile.
var envShape = map[string]any{
	"input":     map[string]any{},
	"nodes":     map[string]NodeResult{},
	"execution": ExecutionInfo{},
	budgetName:  (*budget)(nil),
}

// Expr is a compiled expression together with the ids of the nodes it reads.
type Expr struct {
	source  string
	program *vm.Program
	refs    []string
}

// Source returns the expression's text.
func (e *Expr) Source() string { return e.source }

// Refs returns the sorted ids of the nodes the expression reads through nodes.<id>.
func (e *Expr) Refs() []string { return e.refs }

// CompileExpr compiles one expression under Weft's rules: at most MaxExpressionBytes of source and
// MaxExpressionNodes AST nodes, only input, nodes and execution in scope, and nodes indexed only by a literal id.
func CompileExpr(source string) (*Expr, error) {
	return compileExpr(source, false)
}

// compileExpr compiles source; asBool rejects expressions whose static type is known and not bool.
func compileExpr(source string, asBool bool) (*Expr, error) {
	if strings.TrimSpace(source) == "" {
		return nil, errors.New("expression is empty")
	}
	if len(source) > MaxExpressionBytes {
		return nil, fmt.Errorf("expression is %d bytes long; at most %d are allowed", len(source), MaxExpressionBytes)
	}
	lim := &limiter{}
	opts := append([]expr.Option{expr.Env(envShape), expr.MaxNodes(MaxExpressionNodes), expr.Patch(lim)}, limitOptions...)
	if asBool {
		opts = append(opts, expr.AsBool())
	}
	program, err := expr.Compile(source, opts...)
	if lim.err != nil {
		return nil, lim.err
	}
	if err != nil {
		return nil, errors.New(exprMessage(err))
	}
	refs, err := nodeRefs(program.Node())
	if err != nil {
		return nil, err
	}
	return &Expr{source: source, program: program, refs: refs}, nil
}

// exprMessage is expr's error message without the source excerpt and without Go type names.
func exprMessage(err error) string {
	return typeNames.Replace(firstLine(err.Error()))
}

var typeNames = strings.NewReplacer("type flow.NodeResult", "nodes.<id>", "flow.NodeResult", "nodes.<id>",
	"type flow.ExecutionInfo", "execution", "flow.ExecutionInfo", "execution")

// firstLine drops the source excerpt expr appends to its messages; the path already says where the expression is.
func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// nodeRefs returns the node ids read by the expression rooted at root. Every use of the name nodes must be
// a member access with a literal id (nodes.x or nodes["x"]), so that the set is exact and the engine can load
// only those outputs; $env would bypass that and is refused.
func nodeRefs(root ast.Node) ([]string, error) {
	rv := &refVisitor{allowed: map[*ast.IdentifierNode]bool{}, ids: map[string]bool{}}
	ast.Walk(&root, rv)
	if rv.err != nil {
		return nil, rv.err
	}
	cv := &checkVisitor{allowed: rv.allowed}
	ast.Walk(&root, cv)
	if cv.err != nil {
		return nil, cv.err
	}
	refs := make([]string, 0, len(rv.ids))
	for id := range rv.ids {
		refs = append(refs, id)
	}
	sort.Strings(refs)
	return refs, nil
}

// refVisitor records nodes.<literal> accesses and marks their identifiers as allowed.
type refVisitor struct {
	allowed map[*ast.IdentifierNode]bool
	ids     map[string]bool
	err     error
}

func (v *refVisitor) Visit(node *ast.Node) {
	m, ok := (*node).(*ast.MemberNode)
	if !ok {
		return
	}
	id, ok := m.Node.(*ast.IdentifierNode)
	if !ok || id.Value != "nodes" {
		return
	}
	var key string
	switch p := m.Property.(type) {
	case *ast.StringNode:
		key = p.Value
	case *ast.ConstantNode:
		s, ok := p.Value.(string)
		if !ok {
			return
		}
		key = s
	default:
		return
	}
	v.allowed[id] = true
	v.ids[key] = true
}

// checkVisitor refuses $env and any use of nodes other than a literal member access.
type checkVisitor struct {
	allowed map[*ast.IdentifierNode]bool
	err     error
}

func (v *checkVisitor) Visit(node *ast.Node) {
	if v.err != nil {
		return
	}
	id, ok := (*node).(*ast.IdentifierNode)
	if !ok {
		return
	}
	switch {
	case id.Value == "$env":
		v.err = errors.New("$env is not available; use input, nodes.<id> or execution")
	case id.Value == "nodes" && !v.allowed[id]:
		v.err = errors.New(`nodes must be followed by a literal node id, as in nodes.fetch.output or nodes["fetch"].output`)
	}
}

// Eval runs a compiled expression against scope in the calling goroutine, within MemoryBudget and the
// scope's bounds (see Scope.Bounded): expr's VM polls nothing, so compileExpr patches every predicate body
// to count a step and look at the deadline and the context, and + and the builtins that build large values
// to count their bytes. A bound hit fails the evaluation with a *LimitError.
func Eval(e *Expr, scope Scope) (any, error) {
	env, b := scope.bounds()
	return e.run(env, b)
}

// EvalBool runs a CONDITION expression and requires a boolean result.
func EvalBool(e *Expr, scope Scope) (bool, error) {
	out, err := Eval(e, scope)
	if err != nil {
		return false, err
	}
	b, ok := out.(bool)
	if !ok {
		return false, fmt.Errorf("expression %q returned %T, not a boolean", e.source, out)
	}
	return b, nil
}

func (e *Expr) run(env map[string]any, b *budget) (out any, err error) {
	if b.limit != nil {
		return nil, b.limit
	}
	machine := vm.VM{MemoryBudget: MemoryBudget}
	out, err = machine.Run(e.program, env)
	if err != nil {
		if b.limit == nil && strings.Contains(err.Error(), "memory budget exceeded") {
			b.limit = &LimitError{Code: CodeExpressionTooLarge, Message: fmt.Sprintf("the expression built more than %d elements", MemoryBudget)}
		}
		if b.limit != nil {
			return nil, &LimitError{Code: b.limit.Code, Message: fmt.Sprintf("evaluating %q: %s", truncate(e.source, 200), b.limit.Message)}
		}
		return nil, fmt.Errorf("evaluating %q: %s", truncate(e.source, 200), exprMessage(err))
	}
	return out, nil
}
