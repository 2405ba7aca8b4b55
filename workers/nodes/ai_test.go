package nodes

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	weftredis "github.com/weftdev/weft/persistence/redis"
	"github.com/weftdev/weft/providers"
	"github.com/weftdev/weft/workers/flow"
)

// aiFake is an OpenAI-compatible chat server (JSON and SSE) and a Hugging
// Face classifier, answering with status (200 by default) after delay.
type aiFake struct {
	srv    *httptest.Server
	status atomic.Int64
	delay  atomic.Int64
	calls  atomic.Int64
	mu     sync.Mutex
	bodies []map[string]any
}

func newAIFake(t *testing.T) *aiFake {
	f := &aiFake{}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.calls.Add(1)
		raw, _ := io.ReadAll(r.Body)
		var body map[string]any
		_ = json.Unmarshal(raw, &body)
		f.mu.Lock()
		f.bodies = append(f.bodies, body)
		f.mu.Unlock()
		select {
		case <-time.After(time.Duration(f.delay.Load())):
		case <-r.Context().Done():
			return
		}
		if s := int(f.status.Load()); s != 0 && s != 200 {
			w.WriteHeader(s)
			_, _ = io.WriteString(w, `{"error":{"message":"nope"}}`)
			return
		}
		if r.URL.Path != "/v1/chat/completions" {
			_, _ = io.WriteString(w, `[[{"label":"LABEL_0","score":0.1},{"label":"LABEL_1","score":0.2},{"label":"LABEL_2","score":0.7}]]`)
			return
		}
		if body["stream"] == true {
			w.Header().Set("Content-Type", "text/event-stream")
			for _, d := range []string{"one ", "two ", "three"} {
				_, _ = fmt.Fprintf(w, "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":%q}}]}\n\n", d)
				w.(http.Flusher).Flush()
			}
			_, _ = io.WriteString(w, "data: [DONE]\n\n")
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = fmt.Fprintf(w, `{"id":"1","object":"chat.completion","model":%q,"choices":[{"index":0,"message":{"role":"assistant","content":"answer"},"finish_reason":"stop"}],"usage":{"prompt_tokens":6,"completion_tokens":1,"total_tokens":7}}`, body["model"])
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *aiFake) last() map[string]any {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.bodies[len(f.bodies)-1]
}

// aiRouter is a router whose every provider is one of two fakes: gemini
// and groq call primary, the OpenRouter models and huggingface call backup.
func aiRouter(t *testing.T, primary, backup *aiFake, keys bool) *providers.Router {
	t.Helper()
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	url := os.Getenv("WEFT_TEST_REDIS_URL")
	if url == "" {
		e, err := weftredis.StartEmbedded("127.0.0.1:0")
		require.NoError(t, err)
		t.Cleanup(e.Close)
		url = e.URL()
	}
	rdb, err := weftredis.Connect(context.Background(), url)
	require.NoError(t, err)
	t.Cleanup(func() { _ = rdb.Close() })
	env := map[string]string{
		"WEFT_GEMINI_BASE_URL":      primary.srv.URL + "/v1",
		"WEFT_GROQ_BASE_URL":        primary.srv.URL + "/v1",
		"WEFT_OPENROUTER_BASE_URL":  backup.srv.URL + "/v1",
		"WEFT_HUGGINGFACE_BASE_URL": backup.srv.URL,
	}
	if keys {
		for _, k := range []string{"GEMINI_API_KEY", "GROQ_API_KEY", "OPENROUTER_API_KEY", "HF_TOKEN"} {
			env[k] = "k-" + k
		}
	}
	cfg := providers.ConfigFromEnv(func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	cfg.KeyPrefix = "test:" + hex.EncodeToString(b) + ":"
	cfg.RetryInitial, cfg.RetryMax = time.Millisecond, 5*time.Millisecond
	r, err := providers.New(cfg, providers.Options{Redis: rdb})
	require.NoError(t, err)
	t.Cleanup(r.Close)
	return r
}

// aiInput compiles INPUT → AI_PROCESSOR with config, as a saved workflow.
func aiInput(t *testing.T, config string, inputs map[string]any) Input {
	t.Helper()
	def, problems := flow.Parse([]byte(`{"name":"t","nodes":[{"id":"in","type":"INPUT"},` +
		`{"id":"ai","type":"AI_PROCESSOR","config":` + config + `}],"edges":[{"from":"in","to":"ai"}]}`))
	require.Empty(t, problems)
	g, err := flow.Compile(def)
	require.NoError(t, err)
	return Input{Node: g.Nodes["ai"], Scope: flow.Scope{Input: inputs, Execution: flow.ExecutionInfo{ID: "ex1", WorkflowID: "wf1"}},
		ExecutionID: "ex1", UserID: "u1", Attempt: 1, IdempotencyKey: "ex1:ai"}
}

func TestAIRendersAndAnswers(t *testing.T) {
	t.Parallel()
	primary, backup := newAIFake(t), newAIFake(t)
	node := newAINode(AIConfig{Router: aiRouter(t, primary, backup, true)})
	in := aiInput(t, `{"taskType":"content_generation","prompt":"Summarise {{ input.text }}","system":"You are {{ input.tone }}.","temperature":0.2,"maxTokens":64}`,
		map[string]any{"text": "the report", "tone": "terse"})
	out, err := node.Run(context.Background(), in)
	require.NoError(t, err)
	m := out.(map[string]any)
	require.Equal(t, "answer", m["text"])
	require.Equal(t, "gemini", m["provider"])
	require.Equal(t, "gemini-2.5-flash", m["model"])
	require.Equal(t, false, m["fallback"])
	require.Equal(t, 6, m["usage"].(map[string]any)["promptTokens"])
	require.Equal(t, 1, m["usage"].(map[string]any)["completionTokens"])
	require.Contains(t, m, "latencyMs")

	body := primary.last()
	msgs := body["messages"].([]any)
	require.Equal(t, "You are terse.", msgs[0].(map[string]any)["content"])
	require.Equal(t, "Summarise the report", msgs[1].(map[string]any)["content"])
	require.InDelta(t, 0.2, body["temperature"], 1e-6)
	require.EqualValues(t, 64, body["max_tokens"])
	_, err = json.Marshal(out) // the output is stored as JSON
	require.NoError(t, err)
}

func TestAIFallbackPinAndSentiment(t *testing.T) {
	t.Parallel()
	primary, backup := newAIFake(t), newAIFake(t)
	node := newAINode(AIConfig{Router: aiRouter(t, primary, backup, true)})
	primary.status.Store(503)
	out, err := node.Run(context.Background(), aiInput(t, `{"taskType":"content_generation","prompt":"hi"}`, nil))
	require.NoError(t, err)
	require.Equal(t, "qwen", out.(map[string]any)["provider"])
	require.Equal(t, true, out.(map[string]any)["fallback"])

	out, err = node.Run(context.Background(), aiInput(t, `{"taskType":"code_generation","prompt":"hi","provider":"kimi"}`, nil))
	require.NoError(t, err)
	require.Equal(t, "kimi", out.(map[string]any)["provider"])

	out, err = node.Run(context.Background(), aiInput(t, `{"taskType":"sentiment_analysis","prompt":"{{ input.review }}"}`, map[string]any{"review": "great"}))
	require.NoError(t, err)
	m := out.(map[string]any)
	require.Equal(t, "huggingface", m["provider"])
	require.Equal(t, "positive", m["label"])
	require.InDelta(t, 0.7, m["score"], 1e-9)
}

func TestAIErrorCodes(t *testing.T) {
	t.Parallel()
	primary, backup := newAIFake(t), newAIFake(t)
	node := newAINode(AIConfig{Router: aiRouter(t, primary, backup, true)})
	in := aiInput(t, `{"taskType":"content_generation","prompt":"hi"}`, nil)

	primary.status.Store(500)
	backup.status.Store(502)
	_, err := node.Run(context.Background(), in)
	requireNodeError(t, err, providers.CodeUnavailable, true)

	primary.status.Store(400)
	_, err = node.Run(context.Background(), in)
	requireNodeError(t, err, providers.CodeBadRequest, false)

	_, err = newAINode(AIConfig{Router: aiRouter(t, primary, backup, false)}).Run(context.Background(), in)
	ne := requireNodeError(t, err, providers.CodeNotConfigured, false)
	require.Contains(t, ne.Message, "GEMINI_API_KEY")

	_, err = newAINode(AIConfig{}).Run(context.Background(), in)
	requireNodeError(t, err, providers.CodeNotConfigured, false)

	_, err = node.Run(context.Background(), aiInput(t, `{"taskType":"content_generation","prompt":"{{ input.missing ?? '' }}"}`, map[string]any{}))
	requireNodeError(t, err, providers.CodeBadRequest, false)

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = node.Run(ctx, in)
	requireNodeError(t, err, "cancelled", false)
}

func TestAIKeepsAliveWhileWaiting(t *testing.T) {
	t.Parallel()
	primary, backup := newAIFake(t), newAIFake(t)
	primary.delay.Store(int64(200 * time.Millisecond))
	node := newAINode(AIConfig{Router: aiRouter(t, primary, backup, true), KeepAliveEvery: 20 * time.Millisecond})
	in := aiInput(t, `{"taskType":"quick_decision","prompt":"hi"}`, nil)
	var beats atomic.Int64
	in.KeepAlive = func() { beats.Add(1) }
	_, err := node.Run(context.Background(), in)
	require.NoError(t, err)
	require.GreaterOrEqual(t, beats.Load(), int64(3))
	n := beats.Load()
	time.Sleep(60 * time.Millisecond)
	require.Equal(t, n, beats.Load(), "no keep-alive after the node returned")
}

func TestAIStreamsTokensToTheHook(t *testing.T) {
	t.Parallel()
	primary, backup := newAIFake(t), newAIFake(t)
	var mu sync.Mutex
	var got []string
	node := newAINode(AIConfig{Router: aiRouter(t, primary, backup, true), OnToken: func(ex, nodeID, tok string) {
		mu.Lock()
		defer mu.Unlock()
		got = append(got, ex+"/"+nodeID+":"+tok)
	}})
	out, err := node.Run(context.Background(), aiInput(t, `{"taskType":"quick_decision","prompt":"count"}`, nil))
	require.NoError(t, err)
	require.Equal(t, "one two three", out.(map[string]any)["text"])
	require.Equal(t, []string{"ex1/ai:one ", "ex1/ai:two ", "ex1/ai:three"}, got)
}

func TestAICache(t *testing.T) {
	t.Parallel()
	primary, backup := newAIFake(t), newAIFake(t)
	node := newAINode(AIConfig{Router: aiRouter(t, primary, backup, true)})
	cached := aiInput(t, `{"taskType":"quick_decision","prompt":"same","cache":true}`, nil)
	for range 3 {
		_, err := node.Run(context.Background(), cached)
		require.NoError(t, err)
	}
	require.EqualValues(t, 1, primary.calls.Load())
	out, err := node.Run(context.Background(), cached)
	require.NoError(t, err)
	require.Equal(t, true, out.(map[string]any)["cached"])

	uncached := aiInput(t, `{"taskType":"quick_decision","prompt":"same"}`, nil)
	_, err = node.Run(context.Background(), uncached)
	require.NoError(t, err)
	require.EqualValues(t, 2, primary.calls.Load(), "off by default")
}

// TestAIRegistered: the registered runner has no router and fails every
// run permanently; NewAI makes one with a router.
func TestAIRegistered(t *testing.T) {
	t.Parallel()
	spec, ok := Lookup(flow.TypeAIProcessor)
	require.True(t, ok)
	require.False(t, spec.Pure)
	in := aiInput(t, `{"taskType":"quick_decision","prompt":"hi"}`, nil)
	_, err := spec.Runner.Run(context.Background(), in)
	requireNodeError(t, err, providers.CodeNotConfigured, false)

	primary, backup := newAIFake(t), newAIFake(t)
	out, err := NewAI(AIConfig{Router: aiRouter(t, primary, backup, true)}).Runner.Run(context.Background(), in)
	require.NoError(t, err)
	require.Equal(t, "groq", out.(map[string]any)["provider"])
	require.Equal(t, "answer", out.(map[string]any)["text"])
}
