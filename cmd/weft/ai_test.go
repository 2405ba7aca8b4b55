package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/weftdev/weft/providers"
)

// fakeChat is an OpenAI-compatible chat completions server: it streams
// the words of reply as server-sent events once release is closed, or
// answers 500 when failing.
func fakeChat(t *testing.T, reply []string, failing bool, release <-chan struct{}) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	var calls atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		if r.URL.Path != "/chat/completions" || r.Header.Get("Authorization") == "" {
			http.Error(w, `{"error":{"message":"not found"}}`, http.StatusNotFound)
			return
		}
		if failing {
			http.Error(w, `{"error":{"message":"overloaded"}}`, http.StatusInternalServerError)
			return
		}
		var req struct {
			Stream bool `json:"stream"`
		}
		_ = json.NewDecoder(r.Body).Decode(&req)
		if release != nil {
			select {
			case <-release:
			case <-r.Context().Done():
				return
			}
		}
		if !req.Stream {
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintf(w, `{"id":"c1","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":%q},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":3,"total_tokens":8}}`, strings.Join(reply, ""))
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		for _, word := range reply {
			fmt.Fprintf(w, "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":%q}}]}\n\n", word)
			w.(http.Flusher).Flush()
			time.Sleep(5 * time.Millisecond)
		}
		fmt.Fprint(w, "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":3,\"total_tokens\":8}}\n\n")
		fmt.Fprint(w, "data: [DONE]\n\n")
	}))
	t.Cleanup(srv.Close)
	return srv, &calls
}

// withAI points groq (quick_decision's primary) and gemini (its backup)
// at the given servers.
func withAI(groq, gemini string) option {
	return func(c *Config) {
		c.AI = providers.DefaultConfig()
		c.AI.RetryInitial, c.AI.RetryMax = 10*time.Millisecond, 20*time.Millisecond
		for name, url := range map[string]string{providers.Groq: groq, providers.Gemini: gemini} {
			p := c.AI.Providers[name]
			p.APIKey, p.BaseURL = providers.Secret("test-key-"+name), url
			c.AI.Providers[name] = p
		}
	}
}

// TestAINodeFallsBackAndStreamsTokens runs INPUT → AI_PROCESSOR → OUTPUT
// with the primary provider down: the backup answers, the output says so,
// the tokens reach the execution's event stream as they arrive, and the
// AI dashboard shows both providers' figures.
func TestAINodeFallsBackAndStreamsTokens(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	down, downCalls := fakeChat(t, nil, true, nil)
	up, upCalls := fakeChat(t, []string{"Hel", "lo", " world"}, false, release)
	b := setup(t, withAI(down.URL, up.URL))
	u := b.register(t)
	wf := b.workflow(t, u, map[string]any{
		"name": "ask",
		"nodes": []any{
			map[string]any{"id": "in", "type": "INPUT"},
			map[string]any{"id": "ask", "type": "AI_PROCESSOR", "config": map[string]any{"taskType": "quick_decision", "prompt": "Say hello to {{ input.name }}"}},
			map[string]any{"id": "out", "type": "OUTPUT", "config": map[string]any{"value": "{{ nodes.ask.output }}"}},
		},
		"edges": []any{map[string]any{"from": "in", "to": "ask"}, map[string]any{"from": "ask", "to": "out"}},
	})
	res := b.call(t, "POST", "/api/executions", u.Token, map[string]any{"workflowId": wf, "inputs": map[string]any{"name": "Ann"}})
	require.Equal(t, 202, res.Status, string(res.Raw))
	id := res.Body["id"].(string)

	resp := b.events(t, u.Token, id)
	require.Equal(t, 200, resp.StatusCode)
	var (
		tokens []string
		event  string
	)
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "event: "):
			event = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: ") && event == "snapshot":
			close(release) // the provider answers once the stream is open
		case strings.HasPrefix(line, "data: ") && event == "token":
			var tok struct{ NodeID, Text string }
			require.NoError(t, json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &tok))
			require.Equal(t, "ask", tok.NodeID)
			tokens = append(tokens, tok.Text)
		}
		if event == "end" {
			break
		}
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	require.Equal(t, []string{"Hel", "lo", " world"}, tokens, "tokens in order, as they came")

	ex := b.call(t, "GET", "/api/executions/"+id, u.Token, nil)
	require.Equal(t, "completed", ex.Body["status"], string(ex.Raw))
	out := ex.Body["output"].(map[string]any)
	require.Equal(t, "Hello world", out["text"])
	require.Equal(t, "gemini", out["provider"])
	require.Equal(t, true, out["fallback"])
	require.GreaterOrEqual(t, downCalls.Load(), int64(1))
	require.EqualValues(t, 1, upCalls.Load())

	st := b.call(t, "GET", "/api/dashboard/ai-status", u.Token, nil)
	require.Equal(t, 200, st.Status, string(st.Raw))
	byName := map[string]map[string]any{}
	for _, p := range st.Body["providers"].([]any) {
		byName[p.(map[string]any)["name"].(string)] = p.(map[string]any)
	}
	require.Len(t, byName, 6)
	require.Equal(t, true, byName["groq"]["configured"])
	require.GreaterOrEqual(t, byName["groq"]["failures"], 1.0)
	require.GreaterOrEqual(t, byName["gemini"]["calls"], 1.0)
	require.Equal(t, false, byName["kimi"]["configured"])
	require.Len(t, st.Body["routes"], 6)
	require.EqualValues(t, 1, st.Body["usage"].(map[string]any)["total"].(map[string]any)["requests"])
}

// TestTestAICallsEveryConfiguredProvider: the provider test reaches each
// configured provider once and reports each; the unconfigured are listed
// as such, never called.
func TestTestAICallsEveryConfiguredProvider(t *testing.T) {
	t.Parallel()
	down, _ := fakeChat(t, nil, true, nil)
	up, upCalls := fakeChat(t, []string{"ok"}, false, nil)
	b := setup(t, withAI(down.URL, up.URL), withOperator)
	// Only operators spend the operator's provider keys.
	requireError(t, b.call(t, "POST", "/api/dashboard/test-ai", b.register(t).Token, nil), 403, "forbidden", "-")
	require.Zero(t, upCalls.Load())
	u := b.registerAs(t, operatorEmail)
	res := b.call(t, "POST", "/api/dashboard/test-ai", u.Token, nil)
	require.Equal(t, 200, res.Status, string(res.Raw))
	got := map[string]map[string]any{}
	for _, p := range res.Body["providers"].([]any) {
		got[p.(map[string]any)["name"].(string)] = p.(map[string]any)
	}
	require.Equal(t, true, got["gemini"]["ok"], string(res.Raw))
	require.Equal(t, false, got["groq"]["ok"], string(res.Raw))
	require.Equal(t, false, got["qwen"]["configured"])
	require.GreaterOrEqual(t, upCalls.Load(), int64(1))
}
