package workers

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/weftdev/weft/events"
	"github.com/weftdev/weft/events/natstest"
	"github.com/weftdev/weft/persistence"
)

// TestResult: the view spliced into an encoded event reads back as the
// event's execution, with the rest of the event intact, and a waiter finds
// it where the header says without decoding the result.
func TestResult(t *testing.T) {
	ev := events.Event{ExecutionID: "x1", Kind: events.KindCompleted, UserID: "u", WorkflowID: "w",
		At: time.Unix(1700000000, 0).UTC(), DurationMs: 1.5, Nodes: []events.NodeEvent{{ID: "a", Type: "INPUT", Status: "completed"}}}
	data, err := encodeMessage(ev)
	require.NoError(t, err)
	view := []byte(`{"id":"x1","status":"completed","output":{"s":"}\"{","execution":1}}`)
	var buf bytes.Buffer
	msg, err := events.Result(&buf, "x1", data, view)
	require.NoError(t, err)
	require.Equal(t, events.ResultSubject("x1"), msg.Subject)
	var got events.Event
	require.NoError(t, json.Unmarshal(msg.Data, &got))
	require.JSONEq(t, string(view), string(got.Execution))
	got.Execution = nil
	require.Equal(t, ev, got)
	at, ok := events.ResultExecution(msg)
	require.True(t, ok)
	require.Equal(t, string(view), string(at))
	same, err := encodeMessage(data)
	require.NoError(t, err)
	require.Equal(t, data, same, "encoded bytes pass through")

	// Without a view, the result is the event, and says it carries none.
	bare, err := events.Result(&buf, "x1", data, nil)
	require.NoError(t, err)
	require.Equal(t, data, bare.Data)
	_, ok = events.ResultExecution(bare)
	require.False(t, ok)
	big, err := events.Result(&buf, "x1", data, make([]byte, events.MaxResultExecution+1))
	require.NoError(t, err)
	require.Equal(t, data, big.Data, "a view too large to travel is left out")
	_, ok = events.ResultExecution(big)
	require.False(t, ok)
	edge := append([]byte(`"`), bytes.Repeat([]byte("x"), events.MaxResultExecution-2)...)
	edge = append(edge, '"')
	fits, err := events.Result(&buf, "x1", data, edge)
	require.NoError(t, err)
	at, ok = events.ResultExecution(fits)
	require.True(t, ok, "a view of exactly the limit travels")
	require.Len(t, at, events.MaxResultExecution)

	// A view that cannot be encoded is left out, and the error says why.
	bad, err := events.Result(&buf, "x1", data, map[string]any{"f": func() {}})
	require.Error(t, err)
	require.Equal(t, data, bad.Data)
	huge, err := events.Result(&buf, "x1", data, map[string]string{"s": strings.Repeat("x", events.MaxResultExecution)})
	require.NoError(t, err)
	require.Equal(t, data, huge.Data, "a view encoded too large to travel is left out")

	// A view given as a value is encoded into the result, where the
	// header says, as the encoder writes it alone (an ExecutionView by
	// its own AppendJSON, which takes its raw values as the store's
	// encoder wrote them, compact).
	v := View(&persistence.Execution{ID: "x1", Status: "completed", Output: json.RawMessage(`{"a":[1,2]}`),
		CreatedAt: time.Unix(1700000000, 0).UTC()}, nil)
	enc, err := encodeMessage(v)
	require.NoError(t, err)
	encoded, err := events.Result(&buf, "x1", data, v)
	require.NoError(t, err)
	at, ok = events.ResultExecution(encoded)
	require.True(t, ok)
	require.Equal(t, string(enc), string(at))
	require.NoError(t, json.Unmarshal(encoded.Data, &got))
	require.JSONEq(t, string(enc), string(got.Execution))
	// A view of another type goes through the encoder, which compacts it.
	other, err := events.Result(&buf, "x1", data, map[string]json.RawMessage{"output": json.RawMessage(`{"a":[1, 2]}`)})
	require.NoError(t, err)
	at, ok = events.ResultExecution(other)
	require.True(t, ok)
	require.Equal(t, `{"output":{"a":[1,2]}}`, string(at))
	// An event that is not a JSON object gets no view, and the error
	// says why; nothing panics on an empty one.
	for _, ev := range []string{"", "}", "{}", "{ \n}", `"x}`, "[1]"} {
		m, err := events.Result(&buf, "x1", []byte(ev), v)
		require.Error(t, err, "%q", ev)
		require.Equal(t, ev, string(m.Data))
	}
	// Space around the event is not kept.
	spaced, err := events.Result(&buf, "x1", append([]byte(" \n"), append(data, '\n')...), v)
	require.NoError(t, err)
	at, ok = events.ResultExecution(spaced)
	require.True(t, ok)
	require.Equal(t, string(enc), string(at))
	// A time JSON cannot hold: the view is left out, and the error says why.
	v.CreatedAt = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)
	far, err := events.Result(&buf, "x1", data, v)
	require.Error(t, err)
	require.Equal(t, data, far.Data)

	for _, bad := range []string{"", "x", "-1", "0", "100000", "5", "30"} {
		m, err := events.Result(&buf, "x1", data, view)
		require.NoError(t, err)
		m.Header.Set(events.HeaderExecutionAt, bad)
		_, ok := events.ResultExecution(m)
		require.False(t, ok, "header %q", bad)
	}
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

// TestPublishResultHandsACopyToLocalWaiters: a result goes to this
// process's receiver first, as a copy that outlives the recycled buffer it
// was built in, and over NATS all the same; without a receiver, or with
// none set, only over NATS.
func TestPublishResultHandsACopyToLocalWaiters(t *testing.T) {
	nc, _ := natstest.Connect(t, natstest.Start(t))
	sub, err := nc.SubscribeSync(events.ResultFilter)
	require.NoError(t, err)
	require.NoError(t, nc.Flush())

	var local events.LocalResults
	var got []*nats.Msg
	local.Receive(func(m *nats.Msg) {
		// Handed over before it is published: NATS has at most the
		// results before this one.
		pending, _, err := sub.Pending()
		require.NoError(t, err)
		require.LessOrEqual(t, pending, len(got))
		got = append(got, m)
	})
	data := []byte(`{"executionId":"x1","kind":"completed"}`)
	for _, view := range []string{`{"id":"x1","n":1}`, `{"id":"x1","n":22222}`} {
		require.NoError(t, events.PublishResult(nc, &local, "x1", data, json.RawMessage(view)))
	}
	require.Len(t, got, 2)
	for i, want := range []string{`{"id":"x1","n":1}`, `{"id":"x1","n":22222}`} {
		require.Equal(t, events.ResultSubject("x1"), got[i].Subject)
		view, ok := events.ResultExecution(got[i])
		require.True(t, ok)
		require.Equal(t, want, string(view), "result %d, after the buffer was used again", i)
		over, err := sub.NextMsg(5 * time.Second)
		require.NoError(t, err)
		require.Equal(t, string(got[i].Data), string(over.Data), "the same result over NATS")
	}

	local.Receive(nil)
	require.NoError(t, events.PublishResult(nc, &local, "x2", data, nil))
	require.NoError(t, events.PublishResult(nc, nil, "x3", data, nil))
	require.Len(t, got, 2, "no receiver, nothing handed over")
	for _, id := range []string{"x2", "x3"} {
		over, err := sub.NextMsg(5 * time.Second)
		require.NoError(t, err)
		require.Equal(t, events.ResultSubject(id), over.Subject)
	}
}

// TestHandedOverResultsAreNotEchoed: with a connection of its own, a result
// handed over in process goes out on it, so the waiters of that process,
// subscribed there, do not read it a second time, while every other
// connection gets it; a result not handed over goes out on the
// publisher's connection, and reaches them.
func TestHandedOverResultsAreNotEchoed(t *testing.T) {
	url := natstest.Start(t)
	nc, _ := natstest.Connect(t, url)
	_, err := events.NewLocalResults(nc)
	require.Error(t, err, "a connection that echoes")

	quiet, err := nats.Connect(url, nats.NoEcho())
	require.NoError(t, err)
	t.Cleanup(quiet.Close)
	local, err := events.NewLocalResults(quiet)
	require.NoError(t, err)
	require.Same(t, quiet, local.Conn())
	here, err := quiet.SubscribeSync(events.ResultFilter)
	require.NoError(t, err)
	elsewhere, err := nc.SubscribeSync(events.ResultFilter)
	require.NoError(t, err)
	require.NoError(t, quiet.Flush())
	require.NoError(t, nc.Flush())

	var handed []string
	local.Receive(func(m *nats.Msg) { handed = append(handed, m.Subject) })
	data := []byte(`{"executionId":"x1","kind":"completed"}`)
	require.NoError(t, events.PublishResult(nc, local, "x1", data, json.RawMessage(`{"id":"x1"}`)))
	local.Receive(nil)
	require.NoError(t, events.PublishResult(nc, local, "x2", data, nil))

	require.Equal(t, []string{events.ResultSubject("x1")}, handed)
	var got []string // from two connections: in either order
	for range 2 {
		m, err := elsewhere.NextMsg(5 * time.Second)
		require.NoError(t, err)
		got = append(got, m.Subject)
	}
	require.ElementsMatch(t, []string{events.ResultSubject("x1"), events.ResultSubject("x2")}, got)
	m, err := here.NextMsg(5 * time.Second)
	require.NoError(t, err)
	require.Equal(t, events.ResultSubject("x2"), m.Subject, "only the result not handed over")
	_, err = here.NextMsg(100 * time.Millisecond)
	require.ErrorIs(t, err, nats.ErrTimeout)
}
