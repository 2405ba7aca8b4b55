package nodes

import (
	"context"

	"github.com/weftdev/weft/workers/flow"
)

// TRANSFORM evaluates each expression of its `set` map; the output is the
// object of results.
func init() {
	Register(flow.TypeTransform, Spec{Pure: true, Runner: RunnerFunc(func(_ context.Context, in Input) (any, error) {
		out := make(map[string]any, len(in.Node.Set))
		for name, e := range in.Node.Set {
			v, err := flow.Eval(e, in.Scope)
			if err != nil {
				return nil, exprFailure("expression_error", "set."+name, err)
			}
			out[name] = v
		}
		return out, nil
	})})
}
