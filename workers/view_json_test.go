package workers

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	gojson "github.com/goccy/go-json"
	"github.com/stretchr/testify/require"

	"github.com/weftdev/weft/persistence"
)

// TestAppendJSONIsTheEncoders: a view's own encoding is byte for byte
// what the engine's encoder makes of it, over views drawn at random from
// awkward strings, times, durations and node sets, and reads back as the
// same value with encoding/json.
func TestAppendJSONIsTheEncoders(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 11))
	strs := []string{"", "a", "plain text", `quote " and \ backslash`, "<b>&amp;</b>", "tab\tnew\nline\r",
		"ctl \x00\x01\x08\x0c\x1f\x7f", "bad utf-8 \xff\xfe end", "sep \u2028 \u2029", "ünïcödé ✓ 🚀", "\xe2\x82"}
	pick := func() string { return strs[rng.IntN(len(strs))] }
	ids := []string{"in", "out", "a", "A", "_x", "n1", "n10", "n2", "shape_2", "Z9"} // as flow allows them
	raws := []json.RawMessage{nil, json.RawMessage(`null`), json.RawMessage(`{}`), json.RawMessage(`{"a":1,"b":[true,null,"x"]}`),
		json.RawMessage(`"s"`), json.RawMessage(`12.5`), json.RawMessage(`{"html":"\u003cb\u003e"}`)}
	raw := func() json.RawMessage { return raws[rng.IntN(len(raws))] }
	zones := []*time.Location{time.UTC, time.FixedZone("x", 5*3600+1800), time.FixedZone("y", -7*3600)}
	tm := func() time.Time {
		return time.Unix(rng.Int64N(4e9), rng.Int64N(1e9)*int64(rng.IntN(2))).In(zones[rng.IntN(len(zones))])
	}
	tp := func() *time.Time {
		if rng.IntN(3) == 0 {
			return nil
		}
		v := tm()
		return &v
	}
	durs := []float64{0, 0.001, 1, 1.5, 123.456, 1e-7, 2.5e-9, 1e21, 3.2e22, -4.25, 9007199254740993}
	dp := func() *float64 {
		if rng.IntN(3) == 0 {
			return nil
		}
		return &durs[rng.IntN(len(durs))]
	}
	for i := range 2000 {
		v := ExecutionView{ID: pick(), WorkflowID: pick(), WorkflowVersion: rng.IntN(1000) - 10, Status: pick(),
			Inputs: raw(), Output: raw(), CreatedAt: tm(), StartedAt: tp(), FinishedAt: tp(), DurationMs: dp()}
		if rng.IntN(3) == 0 {
			v.Error = &persistence.ExecutionError{NodeID: pick(), Code: pick(), Message: pick()}
		}
		switch rng.IntN(4) {
		case 0: // nil: left out
		case 1:
			v.Nodes = map[string]NodeView{} // empty: left out
		default:
			v.Nodes = map[string]NodeView{}
			for range 1 + rng.IntN(8) {
				n := NodeView{Type: pick(), Status: pick(), Attempts: rng.IntN(3), StartedAt: tp(), FinishedAt: tp(),
					DurationMs: dp(), Output: raws[rng.IntN(len(raws))]}
				if rng.IntN(4) == 0 {
					n.Error = &persistence.NodeError{Code: pick(), Message: pick()}
				}
				v.Nodes[ids[rng.IntN(len(ids))]] = n
			}
		}
		got, err := v.AppendJSON(nil)
		require.NoError(t, err)
		want, err := gojson.Marshal(v)
		require.NoError(t, err)
		require.Equal(t, string(want), string(got), "view %d", i)
		var a, b any
		require.NoError(t, json.Unmarshal(got, &a), "view %d: %s", i, got)
		std, err := json.Marshal(v)
		require.NoError(t, err)
		require.NoError(t, json.Unmarshal(std, &b))
		require.Equal(t, b, a, "view %d reads back as encoding/json's", i)
		require.True(t, json.Valid(got))
	}

	// After what is there, and times JSON cannot hold refused.
	v := ExecutionView{ID: "x", CreatedAt: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)}
	_, err := v.AppendJSON(nil)
	require.Error(t, err)
	v.CreatedAt = time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	for _, bad := range []float64{math.NaN(), math.Inf(1)} {
		v.DurationMs = &bad
		_, err = v.AppendJSON(nil)
		require.Error(t, err)
		_, err = gojson.Marshal(v)
		require.Error(t, err, "the encoder refuses it too")
	}
	v.DurationMs = nil
	nan := math.NaN()
	v.Nodes = map[string]NodeView{"n": {Type: "TRANSFORM", Status: "completed", DurationMs: &nan}}
	_, err = v.AppendJSON(nil)
	require.Error(t, err, "a node's duration too")
	v.Nodes = nil
	got, err := v.AppendJSON([]byte("prefix:"))
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(string(got), `prefix:{"id":"x",`), string(got))
}
