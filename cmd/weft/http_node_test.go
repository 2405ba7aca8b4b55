package main

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestHTTPRequestNode runs INPUT → HTTP_REQUEST → OUTPUT through the
// engine against a web server that fails once: the retry carries the same
// Idempotency-Key, and the answer reaches the output.
func TestHTTPRequestNode(t *testing.T) {
	t.Parallel()
	var (
		calls atomic.Int64
		mu    sync.Mutex
		keys  []string
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		keys = append(keys, r.Header.Get("Idempotency-Key"))
		mu.Unlock()
		if calls.Add(1) == 1 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"echo": json.RawMessage(body), "q": r.URL.Query().Get("q")})
	}))
	t.Cleanup(srv.Close)

	b := setup(t)
	u := b.register(t)
	wf := b.workflow(t, u, map[string]any{
		"name": "call",
		"nodes": []any{
			map[string]any{"id": "in", "type": "INPUT", "config": map[string]any{"fields": map[string]any{"text": map[string]any{"type": "string", "required": true}}}},
			map[string]any{"id": "call", "type": "HTTP_REQUEST", "config": map[string]any{
				"method": "POST", "url": srv.URL + "/hook", "query": map[string]any{"q": "{{ input.text }}"},
				"body": map[string]any{"text": "{{ input.text }}"}, "retry": map[string]any{"maxAttempts": 3, "backoffMs": 10},
			}},
			map[string]any{"id": "out", "type": "OUTPUT", "config": map[string]any{"value": "{{ nodes.call.output.body }}"}},
		},
		"edges": []any{map[string]any{"from": "in", "to": "call"}, map[string]any{"from": "call", "to": "out"}},
	})
	res := b.call(t, "POST", "/api/executions?wait=20s", u.Token, map[string]any{"workflowId": wf, "inputs": map[string]any{"text": "hi"}})
	require.Equal(t, 200, res.Status, string(res.Raw))
	require.Equal(t, "completed", res.Body["status"], string(res.Raw))
	require.Equal(t, map[string]any{"echo": map[string]any{"text": "hi"}, "q": "hi"}, res.Body["output"])
	call := res.Body["nodes"].(map[string]any)["call"].(map[string]any)
	require.EqualValues(t, 2, call["attempts"])
	mu.Lock()
	defer mu.Unlock()
	require.Len(t, keys, 2)
	require.Equal(t, res.Body["id"].(string)+":call", keys[0])
	require.Equal(t, keys[0], keys[1], "every attempt carries the same key")
}
