package projector

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/weftdev/weft/events"
)

func TestTrimExecution(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ in, want string }{
		{`{"a":1}`, `{"a":1}`},
		{`{"a":1,"execution":{"x":[1,{"y":"}]\"{"}],"z":null},"b":2}`, `{"a":1,"b":2}`},
		{`{"a":1,"execution":"s\\","b":2}`, `{"a":1,"b":2}`},
		{`{"a":1,"execution": null }`, `{"a":1}`},
		{`{"a":1,"execution":12.5,"b":[]}`, `{"a":1,"b":[]}`},
		{`{"a":"x\",\"execution\":1","b":2}`, `{"a":"x\",\"execution\":1","b":2}`},
		{`{"execution":1,"a":2}`, `{"execution":1,"a":2}`},
		{`{"a":1,"execution":{"unterminated":"`, `{"a":1,"execution":{"unterminated":"`},
	} {
		require.Equal(t, tc.want, string(trimExecution([]byte(tc.in))), tc.in)
	}
}

// eventSeeds are published events, as the engine writes them.
func eventSeeds() [][]byte {
	x := exec{id: "e1", user: "u1", wf: "w1", at: time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)}
	end := x.end(events.KindFailed, 12.5, node("a", "HTTP", "failed"), node("b\",\"execution\":", "OUTPUT", "cancelled"))
	end.Execution = json.RawMessage(`{"output":{"text":"` + strings.Repeat(`a \"quoted\" }{ text `, 50) + `"}}`)
	end.Error = events.Errorf("boom", "it broke")
	var out [][]byte
	for _, ev := range []events.Event{x.ev(events.KindQueued), end} {
		b, _ := json.Marshal(ev)
		out = append(out, b)
	}
	return out
}

func TestDecodeEventSkipsTheExecution(t *testing.T) {
	t.Parallel()
	for _, data := range eventSeeds() {
		var full, fast wireEvent
		require.NoError(t, json.Unmarshal(data, &full))
		require.NoError(t, decodeEvent(data, &fast))
		require.Equal(t, full, fast)
	}
	require.Less(t, len(trimExecution(eventSeeds()[1])), 400)
}

// FuzzDecodeEvent: whatever encoding/json reads, decodeEvent reads the same.
func FuzzDecodeEvent(f *testing.F) {
	for _, s := range eventSeeds() {
		f.Add(s)
	}
	f.Add([]byte(`{"executionId":"e","execution":[1,"]",{"a":"\\"}],"kind":"queued"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var full wireEvent
		if json.Unmarshal(data, &full) != nil {
			return
		}
		var fast wireEvent
		require.NoError(t, decodeEvent(data, &fast))
		require.Equal(t, full, fast)
	})
}
