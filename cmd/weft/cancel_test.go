package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/weftdev/weft/events"
)

// TestCancelStopsARunningRequest: cancelling an execution whose
// HTTP_REQUEST node waits on a slow server ends the execution at once and
// stops the request: the server sees its client go away.
func TestCancelStopsARunningRequest(t *testing.T) {
	t.Parallel()
	arrived, gone := make(chan struct{}), make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(arrived)
		select {
		case <-r.Context().Done():
			close(gone)
		case <-time.After(30 * time.Second):
		}
	}))
	t.Cleanup(srv.Close)

	b := setup(t)
	u := b.register(t)
	wf := b.workflow(t, u, map[string]any{
		"name": "slow",
		"nodes": []any{
			map[string]any{"id": "in", "type": "INPUT"},
			map[string]any{"id": "call", "type": "HTTP_REQUEST", "config": map[string]any{"url": srv.URL, "timeoutMs": 60000}},
			map[string]any{"id": "out", "type": "OUTPUT", "config": map[string]any{"value": "{{ nodes.call.output.status }}"}},
		},
		"edges": []any{map[string]any{"from": "in", "to": "call"}, map[string]any{"from": "call", "to": "out"}},
	})
	body := map[string]any{"workflowId": wf, "inputs": map[string]any{}}
	res := b.call(t, "POST", "/api/executions", u.Token, body, "Idempotency-Key", "slow-1")
	require.Equal(t, 202, res.Status, string(res.Raw))
	id := res.Body["id"].(string)
	select {
	case <-arrived:
	case <-time.After(10 * time.Second):
		t.Fatal("the request never reached the server")
	}
	// A caller waiting for the same execution hears of the cancel.
	waited := make(chan response, 1)
	go func() {
		waited <- b.call(t, "POST", "/api/executions?wait=20s", u.Token, body, "Idempotency-Key", "slow-1")
	}()
	time.Sleep(100 * time.Millisecond) // the waiter in place

	start := time.Now()
	cancelled := b.call(t, "POST", "/api/executions/"+id+"/cancel", u.Token, nil)
	require.Equal(t, 200, cancelled.Status, string(cancelled.Raw))
	require.Equal(t, "cancelled", cancelled.Body["status"])
	select {
	case <-gone:
	case <-time.After(5 * time.Second):
		t.Fatal("the request went on after the cancel")
	}
	require.Less(t, time.Since(start), 5*time.Second)
	select {
	case w := <-waited:
		require.Equal(t, 200, w.Status, string(w.Raw))
		require.Equal(t, "cancelled", w.Body["status"])
		require.Equal(t, id, w.Body["id"])
	case <-time.After(5 * time.Second):
		t.Fatal("the waiting caller never heard of the cancel")
	}

	// The node's late end changes nothing: once its task is settled, the
	// execution is still cancelled.
	require.Eventually(t, func() bool {
		c, err := b.main.js.Consumer(context.Background(), events.StreamTasks, events.TaskConsumer("HTTP_REQUEST"))
		if err != nil {
			return false
		}
		info, err := c.Info(context.Background())
		return err == nil && info.NumAckPending == 0 && info.NumPending == 0
	}, 10*time.Second, 20*time.Millisecond)
	got := b.call(t, "GET", "/api/executions/"+id, u.Token, nil)
	require.Equal(t, "cancelled", got.Body["status"], string(got.Raw))
	require.Equal(t, "cancelled", nodeStatus(t, got.Body, "call"))
	require.Equal(t, "cancelled", nodeStatus(t, got.Body, "out"))
}
