// Package nodes holds one file per node type. Each registers a Runner; the
// engine looks runners up by type and knows nothing of what they do.
//
// A pure node (INPUT, TRANSFORM, CONDITION, OUTPUT) only computes from its
// scope, so the engine may run it inline, right where its predecessors
// finished, instead of sending it through JetStream. A node with side
// effects or long waits (HTTP_REQUEST, DATABASE, AI_PROCESSOR) always runs
// in its own pool, from a task.
package nodes

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/weftdev/weft/workers/flow"
)

// Input is what a node runs with.
type Input struct {
	Node        *flow.CompiledNode
	Scope       flow.Scope
	ExecutionID string
	UserID      string
	// Attempt counts runs of this node, from 1.
	Attempt int
	// IdempotencyKey is "<executionId>:<nodeId>": the same on every attempt
	// and redelivery, for side effects that must happen once.
	IdempotencyKey string
	// Log records a line in the node's log.
	Log func(level, message string)
	// KeepAlive tells JetStream the node is still running; long nodes call
	// it so their task is not redelivered to another worker meanwhile.
	KeepAlive func()
}

// Runner runs one node type.
type Runner interface {
	Run(ctx context.Context, in Input) (output any, err error)
}

// RunnerFunc adapts a function to Runner.
type RunnerFunc func(ctx context.Context, in Input) (any, error)

// Run calls f.
func (f RunnerFunc) Run(ctx context.Context, in Input) (any, error) { return f(ctx, in) }

// Spec is a registered node type.
type Spec struct {
	Runner Runner
	// Pure nodes have no side effects and finish in microseconds.
	Pure bool
}

var registry = map[string]Spec{}

// Register adds a node type; each file of this package registers its own.
func Register(nodeType string, spec Spec) {
	if _, dup := registry[nodeType]; dup {
		panic("nodes: " + nodeType + " registered twice")
	}
	registry[nodeType] = spec
}

// Lookup returns the spec of a node type.
func Lookup(nodeType string) (Spec, bool) {
	s, ok := registry[nodeType]
	return s, ok
}

// Types lists the registered node types.
func Types() []string {
	out := make([]string, 0, len(registry))
	for t := range registry {
		out = append(out, t)
	}
	return out
}

// Error is a node failure with a code for the execution's error and a
// verdict on whether another attempt may succeed.
type Error struct {
	Code      string
	Message   string
	Retryable bool
	// RetryAfter, when set, is the least wait before the next attempt (a
	// server's Retry-After).
	RetryAfter time.Duration
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

// Permanent is a failure that another attempt would repeat.
func Permanent(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// Transient is a failure that another attempt may not repeat.
func Transient(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...), Retryable: true}
}

// Classify turns any error from a runner into an *Error. A deadline is
// transient (the node may be faster next time); anything unknown is
// permanent, so a bug does not retry forever.
func Classify(err error) *Error {
	var e *Error
	switch {
	case errors.As(err, &e):
		return e
	case errors.Is(err, context.DeadlineExceeded):
		return Transient("timeout", "the node did not finish in time")
	case errors.Is(err, context.Canceled):
		return Permanent("cancelled", "the node was cancelled")
	}
	return Permanent("node_error", "%s", err.Error())
}

// Replace swaps the runner of a node type and returns a func that puts the
// old one back. Tests use it to count runs or to inject failures; it is not
// safe while an engine is running nodes of that type.
func Replace(nodeType string, spec Spec) (restore func()) {
	old, had := registry[nodeType]
	registry[nodeType] = spec
	return func() {
		if had {
			registry[nodeType] = old
		} else {
			delete(registry, nodeType)
		}
	}
}

// exprFailure is the failure of an expression or template at path: coded
// by the bound it hit (expression_timeout, expression_too_large,
// cancelled), else code. A bound is not retried: another attempt would
// spend as much again.
func exprFailure(code, path string, err error) *Error {
	var limit *flow.LimitError
	if errors.As(err, &limit) {
		code = limit.Code
	}
	if path == "" {
		return Permanent(code, "%s", err)
	}
	return Permanent(code, "%s: %s", path, err)
}
