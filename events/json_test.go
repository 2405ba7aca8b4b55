package events

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"

	gojson "github.com/goccy/go-json"
	"github.com/stretchr/testify/require"
)

// awkward strings for the encoders: escapes, HTML, control characters,
// separators, non-ASCII, invalid UTF-8.
var awkward = []string{"", "a", "plain text", `quote " and \ backslash`, "<b>&amp;</b>", "tab\tnew\nline\r",
	"ctl \x00\x01\x08\x0c\x1f\x7f", "bad utf-8 \xff\xfe end", "sep \u2028 \u2029", "ünïcödé ✓ 🚀", "\xe2\x82"}

// TestAppendValueIsTheEncoders: a value of the shapes expressions and
// decoding give is appended byte for byte as the engine's encoder writes
// it, keys sorted as it sorts them, over values drawn at random; decoded
// says exactly whether decoding that JSON gives the value back; anything
// else is reported, and left to the encoder.
func TestAppendValueIsTheEncoders(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 5))
	// Keys that sort differently raw and encoded ("a" and "a!", "a "),
	// and keys that need escaping.
	keys := []string{"a", "a!", "a ", "a#", "ab", "b", "B", "_", "é", "é!", "", "x<y", "q\"", "tab\t", "\xff", "sep\u2028"}
	floats := []float64{0, math.Copysign(0, -1), 1, -1.5, 0.1, 123.456, 1e-6, 9.999999999999999e20, 1e-7, 2.5e-9, 1e21,
		3.2e22, 5e-324, 9007199254740993, math.MaxFloat64}
	var value func(depth int) any
	value = func(depth int) any {
		switch n := rng.IntN(10); {
		case n == 0:
			return nil
		case n == 1:
			return rng.IntN(2) == 0
		case n == 2:
			return floats[rng.IntN(len(floats))]
		case n == 3:
			return []int{0, -7, 42, math.MaxInt}[rng.IntN(4)]
		case n <= 5 || depth > 3:
			return awkward[rng.IntN(len(awkward))]
		case n <= 7:
			a := make([]any, rng.IntN(4))
			for i := range a {
				a[i] = value(depth + 1)
			}
			return a
		default:
			m := make(map[string]any)
			for range rng.IntN(6) {
				m[keys[rng.IntN(len(keys))]] = value(depth + 1)
			}
			return m
		}
	}
	handled, same := 0, 0
	for i := range 5000 {
		v := value(0)
		got, ok, decoded := AppendValue([]byte("x"), v)
		want, err := gojson.Marshal(v)
		require.NoError(t, err)
		if !ok {
			require.Equal(t, "x", string(got), "value %d: b as it was", i)
			continue
		}
		handled++
		require.Equal(t, "x"+string(want), string(got), "value %d", i)
		exact, ok2, decoded2 := MarshalValue(v)
		require.True(t, ok2)
		require.Equal(t, decoded, decoded2)
		require.Equal(t, string(want), string(exact), "value %d", i)
		require.Equal(t, len(exact), cap(exact), "value %d: no spare room kept", i)
		var back any
		require.NoError(t, gojson.Unmarshal(exact, &back), "value %d", i)
		require.Equal(t, decoded, sameValue(v, back), "value %d: decoded says whether decoding gives it back", i)
		if decoded {
			same++
		}
	}
	require.Greater(t, handled, 1000, "most random values are handled")
	require.Greater(t, same, 500, "many are what decoding gives")
	got, ok, decoded := AppendValue(nil, map[string]any{"a": 1.0, "a!": 2.0, "a ": 3.0, "ab": 4.0, "A": 5.0})
	require.True(t, ok)
	require.True(t, decoded)
	require.Equal(t, `{"A":5,"a ":3,"a!":2,"a":1,"ab":4}`, string(got), "sorted by encoding: the quote after \"a\" sorts above ' ' and '!'")

	// Other types, keys to escape, NaN, nil containers and values that
	// contain themselves: left to the encoder, b as it was.
	cyclic := map[string]any{}
	cyclic["self"] = cyclic
	loop := []any{nil}
	loop[0] = loop
	for _, v := range []any{
		int64(2), float32(1.5), []string{"a"}, map[string]string{"a": "b"}, json.RawMessage(`{}`),
		math.NaN(), math.Inf(-1), []any(nil), map[string]any(nil),
		map[string]any{"x<y": 1.0}, map[string]any{"\xff": 1.0}, map[string]any{"ok": []any{math.NaN()}},
		struct{ A int }{1}, cyclic, loop,
	} {
		b, ok, _ := AppendValue([]byte("prefix"), v)
		require.False(t, ok, "%T", v)
		require.Equal(t, "prefix", string(b), "%T", v)
		data, ok, _ := MarshalValue(v)
		require.False(t, ok, "%T", v)
		require.Nil(t, data)
	}
	_, err := gojson.Marshal(cyclic)
	require.Error(t, err, "the encoder refuses a value that contains itself")
}

// sameValue reports whether a and b are the same JSON value, floats
// compared bit for bit (so -0 is not 0) and ints never equal to the
// float64s decoding gives.
func sameValue(a, b any) bool {
	switch x := a.(type) {
	case float64:
		y, ok := b.(float64)
		return ok && math.Float64bits(x) == math.Float64bits(y)
	case []any:
		y, ok := b.([]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for i := range x {
			if !sameValue(x[i], y[i]) {
				return false
			}
		}
		return true
	case map[string]any:
		y, ok := b.(map[string]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for k, v := range x {
			w, ok := y[k]
			if !ok || !sameValue(v, w) {
				return false
			}
		}
		return true
	case nil, bool, string:
		return a == b
	}
	return false
}

// TestEventAppendJSONIsTheEncoders: an event's own encoding is byte for
// byte the encoder's, with and without nodes, durations and attempts; one
// with an error or an execution goes through the encoder.
func TestEventAppendJSONIsTheEncoders(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	pick := func() string { return awkward[rng.IntN(len(awkward))] }
	durs := []float64{0, 0.001, 1.5, 123.456, 1e-7, 2.5e-9, 1e21, -4.25}
	zones := []*time.Location{time.UTC, time.FixedZone("x", 5*3600+1800)}
	for i := range 2000 {
		ev := Event{ExecutionID: pick(), Kind: pick(), UserID: pick(), WorkflowID: pick(),
			At:         time.Unix(rng.Int64N(4e9), rng.Int64N(1e9)*int64(rng.IntN(2))).In(zones[rng.IntN(len(zones))]),
			DurationMs: durs[rng.IntN(len(durs))]}
		switch rng.IntN(3) {
		case 0: // none
		case 1:
			ev.Nodes = []NodeEvent{}
		default:
			for range 1 + rng.IntN(6) {
				ev.Nodes = append(ev.Nodes, NodeEvent{ID: pick(), Type: pick(), Status: pick(),
					Attempts: rng.IntN(3), DurationMs: durs[rng.IntN(len(durs))]})
			}
		}
		switch rng.IntN(8) {
		case 0:
			ev.Error = Errorf(pick(), "%s", pick())
		case 1:
			ev.Execution = json.RawMessage(`{"id":"x"}`)
		}
		got, err := ev.AppendJSON([]byte("x"))
		require.NoError(t, err)
		want, err := gojson.Marshal(ev)
		require.NoError(t, err)
		require.Equal(t, "x"+string(want), string(got), "event %d", i)
		exact, err := Encode(&ev)
		require.NoError(t, err)
		require.Equal(t, string(want), string(exact), "event %d", i)
		require.Equal(t, len(exact), cap(exact), "event %d: no spare room kept", i)
	}

	ev := Event{ExecutionID: "e", At: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)}
	_, err := ev.AppendJSON(nil)
	require.Error(t, err, "a time JSON cannot hold")
	ev.At = time.Date(2026, 1, 1, 0, 0, 0, 0, time.FixedZone("far", 24*3600))
	_, err = ev.AppendJSON(nil)
	require.Error(t, err, "a zone a day from UTC")
	_, err = gojson.Marshal(ev)
	require.Error(t, err, "the encoder refuses it too")
	ev.At = time.Now()
	ev.Nodes = []NodeEvent{{ID: "n", DurationMs: math.NaN()}}
	_, err = ev.AppendJSON(nil)
	require.Error(t, err, "a NaN duration")
	_, err = Encode(&ev)
	require.Error(t, err)
}

// TestEventAppendJSONKnowsEveryField: AppendJSON writes Event and
// NodeEvent field by field, so a field added to either must be added
// there too (and to TestEventAppendJSONIsTheEncoders); this fails until
// it is.
func TestEventAppendJSONKnowsEveryField(t *testing.T) {
	require.Equal(t, []string{"ExecutionID executionId", "Kind kind", "UserID userId", "WorkflowID workflowId", "At at",
		"Nodes nodes,omitempty", "DurationMs durationMs,omitempty", "Execution execution,omitempty", "Error error,omitempty"},
		fieldTags(Event{}))
	require.Equal(t, []string{"ID id", "Type type", "Status status", "Attempts attempts,omitempty", "DurationMs durationMs,omitempty"},
		fieldTags(NodeEvent{}))
}

// TestAdmissionAppendJSONIsTheEncoders: an admission's own encoding is
// byte for byte the encoder's when its inputs are as the engine writes
// them, and its time reads back the same.
func TestAdmissionAppendJSONIsTheEncoders(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 4))
	pick := func() string { return awkward[rng.IntN(len(awkward))] }
	inputs := []any{map[string]any{}, map[string]any{"text": "<b>&amp;</b>", "n": 7.0, "ok": true, "list": []any{1.5, nil, "x"}},
		map[string]any{"nested": map[string]any{"a!": "sep \u2028", "a": -0.25}}}
	for i := range 1000 {
		a := Admission{ExecutionID: pick(), WorkflowID: pick(), WorkflowVersion: rng.IntN(100) - 5, UserID: pick(),
			CreatedAt: time.Unix(rng.Int64N(4e9), rng.Int64N(1e9)).UTC()}
		if rng.IntN(5) > 0 {
			raw, ok, _ := MarshalValue(inputs[rng.IntN(len(inputs))])
			require.True(t, ok)
			a.Inputs = raw
		}
		got, err := Encode(&a)
		require.NoError(t, err)
		want, err := gojson.Marshal(a)
		require.NoError(t, err)
		require.Equal(t, string(want), string(got), "admission %d", i)
		var back Admission
		require.NoError(t, gojson.Unmarshal(got, &back))
		require.Equal(t, a.CreatedAt, back.CreatedAt)
	}
	require.Equal(t, []string{"ExecutionID executionId", "WorkflowID workflowId", "WorkflowVersion workflowVersion",
		"UserID userId", "CreatedAt createdAt", "Inputs inputs"}, fieldTags(Admission{}),
		"a field added to Admission must be added to its AppendJSON")
}

// fieldTags lists a struct's fields with their json tags.
func fieldTags(v any) []string {
	var out []string
	for f := range reflect.TypeOf(v).Fields() {
		out = append(out, f.Name+" "+f.Tag.Get("json"))
	}
	return out
}
