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
	require.NoError(t, json.Unmarshal(events.WithExecution(data, view), &got))
	require.JSONEq(t, string(view), string(got.Execution))
	got.Execution = nil
	require.Equal(t, ev, got)
	same, err := encodeMessage(data)
	require.NoError(t, err)
	require.Equal(t, data, same, "encoded bytes pass through")
}

// TestDecodeAdmissionIsStrict: a signed submission with a field this
// version does not know, or data after it, is not read.
func TestDecodeAdmissionIsStrict(t *testing.T) {
	var ad events.Admission
	require.NoError(t, decodeAdmission([]byte(`{"executionId":"x1","workflowId":"w","workflowVersion":2,"userId":"u","inputs":{"a":1}}`), &ad))
	require.Equal(t, "x1", ad.ExecutionID)
	require.Equal(t, 2, ad.WorkflowVersion)
	require.JSONEq(t, `{"a":1}`, string(ad.Inputs))
	require.Error(t, decodeAdmission([]byte(`{"executionId":"x1","priority":9}`), &ad))
	require.Error(t, decodeAdmission([]byte(`{"executionId":"x1"} {}`), &ad))
	require.Error(t, decodeAdmission([]byte(`[1]`), &ad))
}
