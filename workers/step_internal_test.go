package workers

import (
	"encoding/json"
	"testing"
	"time"

	gojson "github.com/goccy/go-json"
	"github.com/stretchr/testify/require"
)

// TestDecodedForm: a value decodedForm accepts is what decoding its own
// JSON gives back, so successors read the same inline as across a hop;
// what decodes as something else is refused.
func TestDecodedForm(t *testing.T) {
	same := []any{nil, true, 0.0, -2.5, 1e300, "", "ünïcödé ✓ <&>", "sep \u2028",
		[]any{}, []any{1.5, "x", nil, []any{false}}, map[string]any{}, map[string]any{"a": map[string]any{"b": []any{"c", 2.0}}, "<k>": true}}
	for _, v := range same {
		require.True(t, decodedForm(v), "%#v", v)
		raw, err := gojson.Marshal(v)
		require.NoError(t, err)
		var back any
		require.NoError(t, gojson.Unmarshal(raw, &back))
		require.Equal(t, back, v, "%s", raw)
	}
	var nilMap map[string]any
	var nilSlice []any
	for _, v := range []any{1, int64(2), uint8(3), float32(0.1), "bad \xff", map[string]any{"bad \xff": 1.0},
		map[string]any{"n": 1}, []any{1.0, 2}, nilMap, nilSlice, map[string]string{"a": "b"}, []string{"a"},
		struct{ A float64 }{1}, json.RawMessage(`1`), json.Number("1"), []byte("x"), time.Unix(0, 0)} {
		require.False(t, decodedForm(v), "%#v", v)
	}
}
