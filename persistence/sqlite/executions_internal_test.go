package sqlite

import (
	"encoding/json"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/weftdev/weft/events"
	"github.com/weftdev/weft/persistence"
)

// TestEndedNodesColumnRoundTrips: the nodes column of an execution
// recorded as it ends reads back as the nodes written, times at the
// millisecond, outputs as they were given (they have no whitespace around
// them here, which the decoder drops), over nodes drawn at random with
// awkward strings; an output that is not JSON or nests deeper than the
// decoder reads is refused, as are a node without a status and an id of
// invalid UTF-8.
func TestEndedNodesColumnRoundTrips(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 8))
	strs := []string{"", "a", `quote " and \ backslash`, "<b>&amp;</b>", "tab\tnew\nline", "ctl \x00\x1f", "ünïcödé ✓", "sep \u2028"}
	pick := func() string { return strs[rng.IntN(len(strs))] }
	outputs := []json.RawMessage{nil, json.RawMessage(`1`), json.RawMessage(`{"a":[1,2,null],"b":"<x>"}`),
		json.RawMessage(`{ "spaced" : true }`), json.RawMessage(`"s"`), json.RawMessage(`[]`)}
	at := func() *time.Time {
		if rng.IntN(3) == 0 {
			return nil
		}
		v := time.Unix(rng.Int64N(4e9), rng.Int64N(1e9)).UTC()
		return &v
	}
	for i := range 500 {
		nodes := map[string]*persistence.NodeState{}
		for j := range 1 + rng.IntN(6) {
			n := &persistence.NodeState{Type: pick(), Status: "completed", Attempts: rng.IntN(4),
				StartedAt: at(), FinishedAt: at(), Output: outputs[rng.IntN(len(outputs))]}
			if rng.IntN(4) == 0 {
				n.Status, n.Error = "failed", &persistence.NodeError{Code: pick(), Message: pick()}
			}
			nodes[pick()+string(rune('a'+j))] = n
		}
		col, err := encodeEndedNodes(nodes)
		require.NoError(t, err)
		require.True(t, json.Valid([]byte(col)), "column %d: %s", i, col)
		got := map[string]*persistence.NodeState{}
		require.NoError(t, decodeEndedNodes(col, got))
		require.Len(t, got, len(nodes))
		for id, n := range nodes {
			g := got[id]
			require.NotNil(t, g, "column %d: node %q", i, id)
			require.Equal(t, n.Type, g.Type)
			require.Equal(t, n.Status, g.Status)
			require.Equal(t, n.Attempts, g.Attempts)
			require.Equal(t, persistence.Millis(n.StartedAt), g.StartedAt)
			require.Equal(t, persistence.Millis(n.FinishedAt), g.FinishedAt)
			require.Equal(t, string(n.Output), string(g.Output))
			require.Equal(t, n.Error, g.Error)
		}
	}

	deep := func(n int) json.RawMessage {
		return json.RawMessage(strings.Repeat(`[`, n) + `"]["` + strings.Repeat(`]`, n))
	}
	col, err := encodeEndedNodes(map[string]*persistence.NodeState{"a": {Status: "completed", Output: deep(maxOutputNesting)}})
	require.NoError(t, err)
	require.NoError(t, decodeEndedNodes(col, map[string]*persistence.NodeState{}), "as deep as may be, and read back")
	for _, bad := range []map[string]*persistence.NodeState{
		{"a": {Status: "completed", Output: json.RawMessage(`{"a":`)}},
		{"a": {Status: "completed", Output: deep(maxOutputNesting + 1)}},
		{"a": {Type: "x"}},
		{"a\xff": {Status: "completed"}},
	} {
		_, err = encodeEndedNodes(bad)
		require.Equal(t, events.CodeInvalid, events.ErrorCode(err), "%v", err)
	}
}
