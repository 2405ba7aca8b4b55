package nodes

import (
	"context"

	"github.com/weftdev/weft/workers/flow"
)

// OUTPUT renders its `value`; the engine merges the values of every OUTPUT
// node, by node id, into the execution's output.
func init() {
	Register(flow.TypeOutput, Spec{Pure: true, Runner: RunnerFunc(func(_ context.Context, in Input) (any, error) {
		v, err := flow.Render(in.Node.Params["value"], in.Scope)
		if err != nil {
			return nil, exprFailure("template_error", "value", err)
		}
		return v, nil
	})})
}
