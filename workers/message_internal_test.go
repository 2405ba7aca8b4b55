package workers

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/weftdev/weft/events"
)

// TestWithExecution: the view spliced into an encoded event reads back as
// the event's execution, with the rest of the event intact.
func TestWithExecution(t *testing.T) {
	ev := events.Event{ExecutionID: "x1", Kind: events.KindCompleted, UserID: "u", WorkflowID: "w",
		At: time.Unix(1700000000, 0).UTC(), DurationMs: 1.5, Nodes: []events.NodeEvent{{ID: "a", Type: "INPUT", Status: "completed"}}}
	data, err := encodeMessage(ev)
	require.NoError(t, err)
	view := []byte(`{"id":"x1","status":"completed","output":{"s":"}\"{"}}`)
	var got events.Event
	require.NoError(t, json.Unmarshal(withExecution(data, view), &got))
	require.JSONEq(t, string(view), string(got.Execution))
	got.Execution = nil
	require.Equal(t, ev, got)
	same, err := encodeMessage(data)
	require.NoError(t, err)
	require.Equal(t, data, same, "encoded bytes pass through")
}
