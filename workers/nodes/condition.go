package nodes

import (
	"context"

	"github.com/weftdev/weft/workers/flow"
)

// CONDITION evaluates its boolean expression; the engine takes the edges
// whose branch matches the result and skips the others.
func init() {
	Register(flow.TypeCondition, Spec{Pure: true, Runner: RunnerFunc(func(_ context.Context, in Input) (any, error) {
		ok, err := flow.EvalBool(in.Node.Expression, in.Scope)
		if err != nil {
			return nil, exprFailure("expression_error", "", err)
		}
		return map[string]any{"result": ok}, nil
	})})
}
