package nodes

import (
	"context"

	"github.com/weftdev/weft/workers/flow"
)

// INPUT passes the execution's inputs on: they were checked against its
// fields, and defaults filled in, when the execution was submitted.
func init() {
	Register(flow.TypeInput, Spec{Pure: true, Runner: RunnerFunc(func(_ context.Context, in Input) (any, error) {
		return in.Scope.Input, nil
	})})
}
