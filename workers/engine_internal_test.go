package workers

import (
	"context"
	"encoding/json"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/weftdev/weft/events"
	"github.com/weftdev/weft/events/natstest"
	"github.com/weftdev/weft/persistence"
	"github.com/weftdev/weft/persistence/sqlite"
	"github.com/weftdev/weft/workers/flow"
)

// connect is a connection to a NATS server of the test's own.
func connect(t *testing.T) (*nats.Conn, jetstream.JetStream) {
	return natstest.Connect(t, natstest.Start(t))
}

// TestEndOlderThanTheHistoryIsNotRepublished: a redelivery may announce
// an execution's end again, unless the execution ended before the oldest
// event the stream holds; the stream could then not refuse a second end,
// and the projector would count the execution twice.
func TestEndOlderThanTheHistoryIsNotRepublished(t *testing.T) {
	ctx := context.Background()
	nc, js := connect(t)
	require.NoError(t, EnsureStreams(ctx, js, events.Settings{}))
	store, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "weft.db"))
	require.NoError(t, err)
	t.Cleanup(func() { _ = store.Close() })
	e, err := New(Config{}, nc, js, store, nil)
	require.NoError(t, err)
	ends := make(chan string, 8)
	sub, err := nc.Subscribe(events.EventKindFilter(events.KindCompleted), func(m *nats.Msg) { ends <- m.Subject })
	require.NoError(t, err)
	t.Cleanup(func() { _ = sub.Unsubscribe() })

	// The history starts now.
	_, err = js.Publish(ctx, events.EventSubject("first", events.KindStarted), []byte(`{"executionId":"first","kind":"started"}`))
	require.NoError(t, err)
	time.Sleep(10 * time.Millisecond)
	g := &flow.Graph{Order: []string{"in"}}
	ended := func(id string, at time.Time) *persistence.Execution {
		return &persistence.Execution{ID: id, UserID: "u", WorkflowID: "w", WorkflowVersion: 1, Status: persistence.StatusCompleted,
			Inputs: json.RawMessage(`{}`), CreatedAt: at, StartedAt: &at, FinishedAt: &at,
			Nodes: map[string]*persistence.NodeState{"in": {Type: "INPUT", Status: persistence.StatusCompleted, Attempts: 1}}}
	}
	require.NoError(t, e.republishEnd(ctx, ended("old", time.Now().Add(-time.Hour)), g))
	require.NoError(t, e.republishEnd(ctx, ended("recent", time.Now()), g))
	require.Equal(t, events.EventSubject("recent", events.KindCompleted), <-ends)
	select {
	case s := <-ends:
		t.Fatalf("announced again: %s", s)
	case <-time.After(200 * time.Millisecond):
	}
}

// TestEnsureStreamsLeavesDeclaredStreamsAlone: a process that starts
// against streams already as declared does not update them (an update
// racing another process's consumer creation trips a data race in the
// server); a changed setting is applied.
func TestEnsureStreamsLeavesDeclaredStreamsAlone(t *testing.T) {
	ctx := context.Background()
	nc, js := connect(t)
	updates := make(chan string, 16)
	sub, err := nc.Subscribe("$JS.EVENT.ADVISORY.STREAM.UPDATED.*", func(m *nats.Msg) { updates <- m.Subject })
	require.NoError(t, err)
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	require.NoError(t, EnsureStreams(ctx, js, events.Settings{}))
	require.NoError(t, EnsureStreams(ctx, js, events.Settings{}))
	require.NoError(t, nc.Flush())
	select {
	case s := <-updates:
		t.Fatalf("updated although as declared: %s", s)
	case <-time.After(200 * time.Millisecond):
	}
	require.NoError(t, EnsureStreams(ctx, js, events.Settings{EventsMaxMsgs: 5000}))
	select {
	case s := <-updates:
		require.Equal(t, "$JS.EVENT.ADVISORY.STREAM.UPDATED."+events.StreamEvents, s)
	case <-time.After(5 * time.Second):
		t.Fatal("a changed setting was not applied")
	}
	st, err := js.Stream(ctx, events.StreamEvents)
	require.NoError(t, err)
	require.EqualValues(t, 5000, st.CachedInfo().Config.MaxMsgs)
}
