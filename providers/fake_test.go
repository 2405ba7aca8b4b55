package providers

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
	"strings"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	weftredis "github.com/weftdev/weft/persistence/redis"
)

func TestMain(m *testing.M) {
	// go-redis redials a server that went away (TestRedisDownStillAnswers)
	// from a goroutine that sleeps between tries and ends on its own.
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/redis/go-redis/v9/internal/pool.(*ConnPool).tryDial"),
		goleak.IgnoreAnyFunction("github.com/redis/go-redis/v9/internal/pool.(*ConnPool).tryDial"))
}

// Modes a fake provider can be put in.
const (
	modeOK      = "ok"
	modeDown    = "down"    // 503
	modeStall   = "stall"   // never answers
	modeLimited = "limited" // 429 with Retry-After
	modeGarbage = "garbage" // 200 with a body that is not JSON
	modeBad     = "bad"     // 400
	modeAuth    = "auth"    // 401, echoing the key
	modeEcho    = "echo"    // 200 with a body that is not JSON, echoing the key
	modeFlood   = "flood"   // a stream of deltas that never ends
)

// fake is a provider speaking the OpenAI chat-completions wire format
// (JSON and SSE) under /v1 and the Hugging Face inference API under /hf.
type fake struct {
	t   *testing.T
	srv *httptest.Server

	mu         sync.Mutex
	mode       string
	modeAfter  map[int]string // mode by call number, overriding mode
	retryAfter string
	text       string
	deltas     []string
	labels     string // raw classification JSON
	delay      time.Duration
	calls      int
	bodies     []map[string]any
	stop       chan struct{}
}

func newFake(t *testing.T) *fake {
	f := &fake{t: t, mode: modeOK, text: "hello from fake", stop: make(chan struct{}),
		labels: `[[{"label":"POSITIVE","score":0.98},{"label":"NEGATIVE","score":0.02}]]`}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(func() {
		close(f.stop)
		f.srv.Close()
	})
	return f
}

func (f *fake) set(fn func(f *fake)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

func (f *fake) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

func (f *fake) lastBody() map[string]any {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.bodies) == 0 {
		return nil
	}
	return f.bodies[len(f.bodies)-1]
}

func (f *fake) serve(w http.ResponseWriter, r *http.Request) {
	raw, _ := io.ReadAll(r.Body)
	var body map[string]any
	_ = json.Unmarshal(raw, &body)
	f.mu.Lock()
	f.calls++
	n := f.calls
	f.bodies = append(f.bodies, body)
	mode := f.mode
	if m, ok := f.modeAfter[n]; ok {
		mode = m
	}
	retryAfter, text, deltas, labels, delay := f.retryAfter, f.text, f.deltas, f.labels, f.delay
	f.mu.Unlock()

	if delay > 0 {
		select {
		case <-time.After(delay):
		case <-r.Context().Done():
			return
		case <-f.stop:
			return
		}
	}

	if !strings.HasPrefix(r.Header.Get("Authorization"), "Bearer ") {
		http.Error(w, `{"error":{"message":"no key"}}`, http.StatusUnauthorized)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	switch mode {
	case modeDown:
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = io.WriteString(w, `{"error":{"message":"overloaded","type":"server_error"}}`)
		return
	case modeStall:
		select {
		case <-r.Context().Done():
		case <-f.stop:
		}
		return
	case modeLimited:
		w.Header().Set("Retry-After", retryAfter)
		w.WriteHeader(http.StatusTooManyRequests)
		_, _ = io.WriteString(w, `{"error":{"message":"rate limit reached","type":"rate_limit"}}`)
		return
	case modeGarbage:
		_, _ = io.WriteString(w, `<html>surprise</html>`)
		return
	case modeBad:
		w.WriteHeader(http.StatusBadRequest)
		_, _ = io.WriteString(w, `{"error":{"message":"context length exceeded","type":"invalid_request_error"}}`)
		return
	case modeAuth:
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = fmt.Fprintf(w, `{"error":{"message":"invalid key %s"}}`, strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "))
		return
	case modeEcho:
		_, _ = fmt.Fprintf(w, "unexpected request with %s", r.Header.Get("Authorization"))
		return
	case modeFlood:
		w.Header().Set("Content-Type", "text/event-stream")
		chunk, _ := json.Marshal(map[string]any{"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": body["model"],
			"choices": []any{map[string]any{"index": 0, "delta": map[string]any{"content": strings.Repeat("x", 256)}, "finish_reason": nil}}})
		for {
			if _, err := fmt.Fprintf(w, "data: %s\n\n", chunk); err != nil {
				return
			}
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
				return
			case <-f.stop:
				return
			case <-time.After(time.Millisecond):
			}
		}
	}

	switch {
	case strings.HasPrefix(r.URL.Path, "/hf/models/"):
		_, _ = io.WriteString(w, labels)
	case r.URL.Path == "/v1/chat/completions" && body["stream"] == true:
		w.Header().Set("Content-Type", "text/event-stream")
		fl := w.(http.Flusher)
		for _, d := range deltas {
			chunk, _ := json.Marshal(map[string]any{"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": body["model"],
				"choices": []any{map[string]any{"index": 0, "delta": map[string]any{"content": d}, "finish_reason": nil}}})
			_, _ = fmt.Fprintf(w, "data: %s\n\n", chunk)
			fl.Flush()
			time.Sleep(5 * time.Millisecond)
		}
		_, _ = io.WriteString(w, `data: {"id":"c1","object":"chat.completion.chunk","created":1,"choices":[],"usage":{"prompt_tokens":4,"completion_tokens":3,"total_tokens":7}}`+"\n\n")
		_, _ = io.WriteString(w, "data: [DONE]\n\n")
	case r.URL.Path == "/v1/chat/completions":
		_ = json.NewEncoder(w).Encode(map[string]any{
			"id": "c1", "object": "chat.completion", "created": 1, "model": body["model"],
			"choices": []any{map[string]any{"index": 0, "message": map[string]any{"role": "assistant", "content": text}, "finish_reason": "stop"}},
			"usage":   map[string]any{"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10},
		})
	default:
		http.NotFound(w, r)
	}
}

// bundle is what a test works with.
type bundle struct {
	fakes  map[string]*fake
	cfg    Config
	rdb    goredis.UniversalClient
	router *Router
}

// redisServer is a real Redis when WEFT_TEST_REDIS_URL names one, else
// the embedded server; every test gets a key prefix of its own.
func redisServer(t *testing.T) (goredis.UniversalClient, string) {
	t.Helper()
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	prefix := "test:" + hex.EncodeToString(b) + ":"
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
	return rdb, prefix
}

// setup gives every provider a fake and a key, and a router over a fresh
// Redis; edit adjusts the config first.
func setup(t *testing.T, edit ...func(*Config)) *bundle {
	t.Helper()
	b := &bundle{fakes: map[string]*fake{}}
	b.rdb, b.cfg.KeyPrefix = redisServer(t)
	b.cfg = testConfig(b.cfg.KeyPrefix)
	for _, name := range Names {
		f := newFake(t)
		b.fakes[name] = f
		p := b.cfg.Providers[name]
		p.BaseURL = f.srv.URL + "/v1"
		if name == HuggingFace {
			p.BaseURL, p.ChatBaseURL = f.srv.URL+"/hf", f.srv.URL+"/v1"
		}
		p.APIKey = Secret("key-" + name + "-0123456789")
		b.cfg.Providers[name] = p
	}
	for _, fn := range edit {
		fn(&b.cfg)
	}
	b.router = b.newRouter(t)
	return b
}

// testConfig is DefaultConfig with waits short enough for tests.
func testConfig(prefix string) Config {
	cfg := DefaultConfig()
	cfg.KeyPrefix = prefix
	cfg.AttemptTimeout = 5 * time.Second
	cfg.RetryInitial = 10 * time.Millisecond
	cfg.RetryMax = 50 * time.Millisecond
	cfg.MaxRetryAfter = 2 * time.Second
	cfg.Breaker.StateCacheFor = 20 * time.Millisecond
	return cfg
}

// newRouter is another router (another process) over the same Redis.
func (b *bundle) newRouter(t *testing.T) *Router {
	t.Helper()
	r, err := New(b.cfg, Options{Redis: b.rdb})
	require.NoError(t, err)
	t.Cleanup(r.Close)
	return r
}

func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
