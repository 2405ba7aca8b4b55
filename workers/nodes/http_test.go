package nodes

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/weftdev/weft/workers/flow"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// httpBundle is one HTTP_REQUEST runner and the loopback server it calls.
type httpBundle struct {
	node *httpNode
	srv  *httptest.Server
	port string
}

// setupHTTP starts handler on 127.0.0.1 and a runner for cfg; AllowPrivate
// must be true for the runner to reach it.
func setupHTTP(t *testing.T, cfg HTTPConfig, handler http.HandlerFunc) *httpBundle {
	t.Helper()
	n := newHTTPNode(cfg, nil)
	t.Cleanup(n.transport.CloseIdleConnections)
	srv := httptest.NewServer(handler)
	t.Cleanup(srv.Close)
	_, port, err := net.SplitHostPort(srv.Listener.Addr().String())
	require.NoError(t, err)
	return &httpBundle{node: n, srv: srv, port: port}
}

// compileHTTP compiles INPUT → HTTP_REQUEST with the given config JSON, as a
// saved workflow would be, and returns the HTTP node.
func compileHTTP(t *testing.T, config string) *flow.CompiledNode {
	t.Helper()
	def, problems := flow.Parse([]byte(`{"name":"t","nodes":[{"id":"in","type":"INPUT"},` +
		`{"id":"h","type":"HTTP_REQUEST","config":` + config + `}],"edges":[{"from":"in","to":"h"}]}`))
	require.Empty(t, problems)
	g, err := flow.Compile(def)
	require.NoError(t, err)
	return g.Nodes["h"]
}

func httpInput(t *testing.T, config string, inputs map[string]any) Input {
	return Input{
		Node:           compileHTTP(t, config),
		Scope:          flow.Scope{Input: inputs, Execution: flow.ExecutionInfo{ID: "ex1", WorkflowID: "wf1"}},
		ExecutionID:    "ex1",
		Attempt:        1,
		IdempotencyKey: "ex1:h",
	}
}

// urlConfig is a config that GETs {{ input.url }}, so tests can aim it anywhere.
const urlConfig = `{"url":"{{ input.url }}"}`

func requireNodeError(t *testing.T, err error, code string, retryable bool) *Error {
	t.Helper()
	var ne *Error
	require.True(t, errors.As(err, &ne), "want *Error, got %v", err)
	require.Equal(t, code, ne.Code, ne.Message)
	require.Equal(t, retryable, ne.Retryable, ne.Message)
	return ne
}

func TestHTTPTemplatesAndJSON(t *testing.T) {
	t.Parallel()
	b := setupHTTP(t, HTTPConfig{AllowPrivate: true}, func(w http.ResponseWriter, r *http.Request) {
		var body any
		require.NoError(t, json.NewDecoder(r.Body).Decode(&body))
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.Header().Set("X-Reply", "yes")
		_ = json.NewEncoder(w).Encode(map[string]any{
			"method": r.Method, "path": r.URL.Path, "q": r.URL.Query()["q"], "n": r.URL.Query().Get("n"),
			"token": r.Header.Get("X-Token"), "contentType": r.Header.Get("Content-Type"),
			"idempotencyKey": r.Header.Get("Idempotency-Key"), "body": body,
		})
	})
	in := httpInput(t, `{"method":"post","url":"{{ input.base }}/items/{{ input.id }}",
		"headers":{"X-Token":"Bearer {{ input.token }}"},
		"query":{"q":"{{ input.q }}","n":"{{ input.n }}"},
		"body":{"text":"{{ input.text }}","n":"{{ input.n }}","tags":["a","{{ input.q }}"]}}`,
		map[string]any{"base": b.srv.URL, "id": 42, "token": "s3cret", "q": "hello world", "n": 3, "text": "hi"})

	out, err := b.node.Run(context.Background(), in)
	require.NoError(t, err)
	res := out.(map[string]any)
	require.Equal(t, 200, res["status"])
	require.Equal(t, "yes", res["headers"].(map[string]any)["x-reply"])
	require.Equal(t, map[string]any{
		"method": "POST", "path": "/items/42", "q": []any{"hello world"}, "n": "3",
		"token": "Bearer s3cret", "contentType": "application/json", "idempotencyKey": "ex1:h",
		// A lone {{ }} keeps its type: n is sent as a number.
		"body": map[string]any{"text": "hi", "n": float64(3), "tags": []any{"a", "hello world"}},
	}, res["body"])
}

func TestHTTPStringBodyAndTextResponse(t *testing.T) {
	t.Parallel()
	b := setupHTTP(t, HTTPConfig{AllowPrivate: true}, func(w http.ResponseWriter, r *http.Request) {
		raw, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprintf(w, "got %q as %q", raw, r.Header.Get("Content-Type"))
	})
	in := httpInput(t, `{"method":"PUT","url":"{{ input.url }}","body":"raw {{ input.text }}"}`,
		map[string]any{"url": b.srv.URL, "text": "hi"})
	out, err := b.node.Run(context.Background(), in)
	require.NoError(t, err)
	require.Equal(t, `got "raw hi" as ""`, out.(map[string]any)["body"])
}

func TestHTTPStatus(t *testing.T) {
	t.Parallel()
	b := setupHTTP(t, HTTPConfig{AllowPrivate: true}, func(w http.ResponseWriter, r *http.Request) {
		if ra := r.URL.Query().Get("retryAfter"); ra != "" {
			w.Header().Set("Retry-After", ra)
		}
		w.Header().Set("Content-Type", "application/json")
		code, _ := strconv.Atoi(r.URL.Query().Get("status"))
		w.WriteHeader(code)
		fmt.Fprintf(w, `{"status":%d}`, code)
	})
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	b.node.now = func() time.Time { return now }

	for _, tc := range []struct {
		name       string
		status     int
		retryAfter string
		keepGoing  bool // failOnStatus: false
		code       string
		retryable  bool
		wait       time.Duration
	}{
		{name: "not found is permanent", status: 404, code: "http_404"},
		{name: "bad request is permanent", status: 400, code: "http_400"},
		{name: "server error is transient", status: 500, code: "http_500", retryable: true},
		{name: "unavailable honours seconds", status: 503, retryAfter: "7", code: "http_503", retryable: true, wait: 7 * time.Second},
		{name: "rate limited honours seconds", status: 429, retryAfter: "2", code: "http_429", retryable: true, wait: 2 * time.Second},
		{name: "rate limited honours a date", status: 429, retryAfter: now.Add(30 * time.Second).Format(http.TimeFormat), code: "http_429", retryable: true, wait: 30 * time.Second},
		{name: "a date in the past is no wait", status: 429, retryAfter: now.Add(-time.Minute).Format(http.TimeFormat), code: "http_429", retryable: true},
		{name: "garbage Retry-After is no wait", status: 429, retryAfter: "soon", code: "http_429", retryable: true},
		{name: "huge Retry-After is capped", status: 429, retryAfter: "99999999", code: "http_429", retryable: true, wait: maxRetryAfter},
		{name: "failOnStatus false keeps a 404", status: 404, keepGoing: true},
		{name: "failOnStatus false keeps a 500", status: 500, keepGoing: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := `{"url":"{{ input.url }}","query":{"status":"{{ input.status }}","retryAfter":"{{ input.ra }}"}}`
			if tc.keepGoing {
				cfg = `{"url":"{{ input.url }}","failOnStatus":false,"query":{"status":"{{ input.status }}"}}`
			}
			in := httpInput(t, cfg, map[string]any{"url": b.srv.URL, "status": tc.status, "ra": tc.retryAfter})
			out, err := b.node.Run(context.Background(), in)
			if tc.keepGoing {
				require.NoError(t, err)
				res := out.(map[string]any)
				require.Equal(t, tc.status, res["status"])
				require.Equal(t, map[string]any{"status": float64(tc.status)}, res["body"])
				return
			}
			ne := requireNodeError(t, err, tc.code, tc.retryable)
			require.Equal(t, tc.wait, ne.RetryAfter)
			require.Contains(t, ne.Message, strconv.Itoa(tc.status))
		})
	}
}

func TestHTTPRetryKeepsIdempotencyKey(t *testing.T) {
	t.Parallel()
	var (
		mu   sync.Mutex
		keys []string
	)
	b := setupHTTP(t, HTTPConfig{AllowPrivate: true}, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		keys = append(keys, r.Header.Get("Idempotency-Key"))
		first := len(keys) == 1
		mu.Unlock()
		if first {
			http.Error(w, "try again", http.StatusInternalServerError)
			return
		}
		_, _ = io.WriteString(w, "done")
	})
	in := httpInput(t, `{"method":"POST","url":"{{ input.url }}","body":{"a":1}}`, map[string]any{"url": b.srv.URL})

	_, err := b.node.Run(context.Background(), in)
	requireNodeError(t, err, "http_500", true)

	in.Attempt = 2
	out, err := b.node.Run(context.Background(), in)
	require.NoError(t, err)
	require.Equal(t, "done", out.(map[string]any)["body"])
	require.Equal(t, []string{"ex1:h", "ex1:h"}, keys)
}

func TestHTTPTimeoutCancelAndKeepAlive(t *testing.T) {
	t.Parallel()
	b := setupHTTP(t, HTTPConfig{AllowPrivate: true, KeepAliveEvery: 10 * time.Millisecond}, func(w http.ResponseWriter, r *http.Request) {
		d, _ := time.ParseDuration(r.URL.Query().Get("delay"))
		select {
		case <-time.After(d):
			_, _ = io.WriteString(w, "late")
		case <-r.Context().Done():
		}
	})
	cfg := `{"url":"{{ input.url }}","query":{"delay":"{{ input.delay }}"}}`

	t.Run("deadline is a transient timeout", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		_, err := b.node.Run(ctx, httpInput(t, cfg, map[string]any{"url": b.srv.URL, "delay": "10s"}))
		requireNodeError(t, err, "timeout", true)
	})
	t.Run("cancel stops the request", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(50*time.Millisecond, cancel)
		start := time.Now()
		_, err := b.node.Run(ctx, httpInput(t, cfg, map[string]any{"url": b.srv.URL, "delay": "10s"}))
		requireNodeError(t, err, "cancelled", false)
		require.Less(t, time.Since(start), 5*time.Second)
	})
	t.Run("a slow answer keeps the task alive", func(t *testing.T) {
		t.Parallel()
		var alive atomic.Int64
		in := httpInput(t, cfg, map[string]any{"url": b.srv.URL, "delay": "150ms"})
		in.KeepAlive = func() { alive.Add(1) }
		out, err := b.node.Run(context.Background(), in)
		require.NoError(t, err)
		require.Equal(t, "late", out.(map[string]any)["body"])
		require.GreaterOrEqual(t, alive.Load(), int64(2))
		n := alive.Load()
		time.Sleep(50 * time.Millisecond)
		require.Equal(t, n, alive.Load(), "KeepAlive must stop when the node returns")
	})
}

func TestHTTPRedirects(t *testing.T) {
	t.Parallel()
	b := setupHTTP(t, HTTPConfig{AllowPrivate: true}, func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.HasPrefix(r.URL.Path, "/hops/"):
			n, _ := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/hops/"))
			if n > 0 {
				http.Redirect(w, r, "/hops/"+strconv.Itoa(n-1), http.StatusFound)
				return
			}
			_, _ = io.WriteString(w, "arrived")
		case r.URL.Path == "/to":
			http.Redirect(w, r, r.URL.Query().Get("target"), http.StatusFound)
		default:
			http.NotFound(w, r)
		}
	})
	for _, tc := range []struct {
		name, path string
		code       string // empty: success
	}{
		{"same server", "/hops/1", ""},
		{"five redirects are followed", "/hops/5", ""},
		{"a sixth is not", "/hops/6", "too_many_redirects"},
		{"file scheme", "/to?target=file:///etc/passwd", "redirect_refused"},
		{"gopher scheme", "/to?target=gopher://127.0.0.1:70/_x", "redirect_refused"},
		{"metadata even when private is allowed", "/to?target=http://169.254.169.254/latest/meta-data/", "address_not_allowed"},
		{"metadata over IPv6", "/to?target=http://[fd00:ec2::254]/", "address_not_allowed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			out, err := b.node.Run(context.Background(), httpInput(t, urlConfig, map[string]any{"url": b.srv.URL + tc.path}))
			if tc.code == "" {
				require.NoError(t, err)
				require.Equal(t, "arrived", out.(map[string]any)["body"])
				return
			}
			requireNodeError(t, err, tc.code, false)
		})
	}
}

// TestHTTPRedirectToLoopbackRefused runs a "public" server on 127.0.0.2,
// which the runner's policy lets through, and redirects to 127.0.0.1 and
// localhost, which the real policy refuses.
func TestHTTPRedirectToLoopbackRefused(t *testing.T) {
	t.Parallel()
	public := netip.MustParseAddr("127.0.0.2")
	n := newHTTPNode(HTTPConfig{}, func(ip netip.Addr) error {
		if ip.Unmap() == public {
			return nil
		}
		return checkAddr(ip, false)
	})
	t.Cleanup(n.transport.CloseIdleConnections)

	var internalHits atomic.Int64
	internal := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { internalHits.Add(1) }))
	t.Cleanup(internal.Close)
	_, internalPort, _ := net.SplitHostPort(internal.Listener.Addr().String())

	l, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Skipf("cannot listen on 127.0.0.2: %v", err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if target := r.URL.Query().Get("target"); target != "" {
			http.Redirect(w, r, target, http.StatusTemporaryRedirect)
			return
		}
		_, _ = io.WriteString(w, "public")
	}))
	_ = srv.Listener.Close()
	srv.Listener = l
	srv.Start()
	t.Cleanup(srv.Close)

	out, err := n.Run(context.Background(), httpInput(t, urlConfig, map[string]any{"url": srv.URL}))
	require.NoError(t, err, "the stand-in public server is reachable")
	require.Equal(t, "public", out.(map[string]any)["body"])

	for _, target := range []string{
		"http://127.0.0.1:" + internalPort + "/",
		"http://localhost:" + internalPort + "/", // refused at dial time, after DNS
		"http://2130706433:" + internalPort + "/",
		"http://[::ffff:127.0.0.1]:" + internalPort + "/",
	} {
		_, err := n.Run(context.Background(), httpInput(t, urlConfig, map[string]any{"url": srv.URL + "/?target=" + target}))
		requireNodeError(t, err, "address_not_allowed", false)
	}
	require.Zero(t, internalHits.Load())
}

func TestHTTPRefusesInternalAddresses(t *testing.T) {
	t.Parallel()
	var hits atomic.Int64
	handler := func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		_, _ = io.WriteString(w, "inside")
	}
	closed := setupHTTP(t, HTTPConfig{}, handler)
	open := setupHTTP(t, HTTPConfig{AllowPrivate: true}, handler)

	// Spellings of 127.0.0.1 that Go's parser, Go's resolver and a C
	// resolver each read differently; the IP dialled is what counts.
	loopbacks := []string{
		"127.0.0.1", "localhost", "2130706433", "0x7f000001", "0x7f.1", "0177.0.0.1", "127.1",
		"127.0.0.1.", "[::ffff:127.0.0.1]", "[::ffff:7f00:1]",
	}
	for _, host := range loopbacks {
		t.Run("refused "+host, func(t *testing.T) {
			t.Parallel()
			u := "http://" + host + ":" + closed.port + "/"
			_, err := closed.node.Run(context.Background(), httpInput(t, urlConfig, map[string]any{"url": u}))
			requireNodeError(t, err, "address_not_allowed", false)
		})
	}
	for _, host := range []string{"[::1]", "0.0.0.0", "0", "[::]", "10.0.0.1", "192.168.1.1", "169.254.1.1", "100.64.0.1"} {
		t.Run("refused "+host, func(t *testing.T) {
			t.Parallel()
			u := "http://" + host + ":" + closed.port + "/"
			_, err := closed.node.Run(context.Background(), httpInput(t, urlConfig, map[string]any{"url": u}))
			requireNodeError(t, err, "address_not_allowed", false)
		})
	}
	for _, u := range []string{
		"http://169.254.169.254/latest/meta-data/", "http://[fd00:ec2::254]/", "http://[::ffff:169.254.169.254]/",
		"http://2852039166/", "http://0xa9fea9fe/", "http://0251.0376.0251.0376/", "http://[64:ff9b::a9fe:a9fe]/",
		"http://0.0.0.0:" + open.port + "/",
	} {
		t.Run("refused always "+u, func(t *testing.T) {
			t.Parallel()
			_, err := open.node.Run(context.Background(), httpInput(t, urlConfig, map[string]any{"url": u}))
			requireNodeError(t, err, "address_not_allowed", false)
		})
	}
	t.Run("allowed when private is", func(t *testing.T) {
		for _, host := range loopbacks {
			if host == "[::ffff:7f00:1]" || host == "127.0.0.1." {
				continue // the same as their neighbours; keep the loop short
			}
			out, err := open.node.Run(context.Background(), httpInput(t, urlConfig, map[string]any{"url": "http://" + host + ":" + open.port + "/"}))
			require.NoError(t, err, host)
			require.Equal(t, "inside", out.(map[string]any)["body"], host)
		}
	})
	t.Cleanup(func() { require.Equal(t, int64(len(loopbacks)-2), hits.Load(), "only the allowed runner got through") })
}

func TestHTTPRefusesOtherSchemes(t *testing.T) {
	t.Parallel()
	b := setupHTTP(t, HTTPConfig{AllowPrivate: true}, func(http.ResponseWriter, *http.Request) {})
	for _, u := range []any{"file:///etc/passwd", "gopher://127.0.0.1:70/_x", "ftp://example.com/x", "javascript:alert(1)",
		"/relative", "", "http://", 42} {
		t.Run(fmt.Sprint(u), func(t *testing.T) {
			t.Parallel()
			_, err := b.node.Run(context.Background(), httpInput(t, urlConfig, map[string]any{"url": u}))
			requireNodeError(t, err, "invalid_url", false)
		})
	}
}

func TestHTTPResponseCap(t *testing.T) {
	t.Parallel()
	handler := func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		if r.URL.Query().Get("chunked") != "" {
			w.(http.Flusher).Flush() // no Content-Length: the cap must hold while reading
		}
		_, _ = io.WriteString(w, strings.Repeat("x", n))
	}
	b := setupHTTP(t, HTTPConfig{AllowPrivate: true}, handler)
	small := setupHTTP(t, HTTPConfig{AllowPrivate: true, MaxResponseBytes: 5}, handler)
	for _, tc := range []struct {
		name   string
		b      *httpBundle
		config string
		query  string
		ok     bool
	}{
		{"at the node's cap", b, `"maxResponseBytes":10`, "n=10", true},
		{"past the node's cap", b, `"maxResponseBytes":10`, "n=11", false},
		{"past the node's cap, chunked", b, `"maxResponseBytes":10`, "n=11&chunked=1", false},
		{"at the process cap", small, ``, "n=5&chunked=1", true},
		{"past the process cap", small, ``, "n=6&chunked=1", false},
		{"the node's cap wins", small, `"maxResponseBytes":100`, "n=50", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := `{"url":"{{ input.url }}"`
			if tc.config != "" {
				cfg += "," + tc.config
			}
			cfg += "}"
			out, err := tc.b.node.Run(context.Background(), httpInput(t, cfg, map[string]any{"url": tc.b.srv.URL + "/?" + tc.query}))
			if tc.ok {
				require.NoError(t, err)
				require.NotEmpty(t, out.(map[string]any)["body"])
				return
			}
			requireNodeError(t, err, "response_too_large", false)
		})
	}
}

func TestCheckAddr(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		ip           string
		closed, open bool // refused with AllowPrivate false, true
	}{
		{"8.8.8.8", false, false},
		{"1.1.1.1", false, false},
		{"2606:4700:4700::1111", false, false},
		{"::ffff:8.8.8.8", false, false},
		{"172.32.0.1", false, false},
		{"100.128.0.1", false, false},
		{"127.0.0.1", true, false},
		{"127.255.255.254", true, false},
		{"::1", true, false},
		{"::ffff:127.0.0.1", true, false},
		{"::127.0.0.1", true, false},
		{"64:ff9b::7f00:1", true, false},
		{"2002:7f00:1::", true, false},
		{"10.1.2.3", true, false},
		{"172.16.0.1", true, false},
		{"172.31.255.255", true, false},
		{"192.168.0.1", true, false},
		{"100.64.0.1", true, false},
		{"100.127.255.255", true, false},
		{"169.254.1.1", true, false},
		{"fe80::1", true, false},
		{"fe80::1%eth0", true, false},
		{"fc00::1", true, false},
		{"fd12:3456::1", true, false},
		{"169.254.169.254", true, true},
		{"::ffff:169.254.169.254", true, true},
		{"fd00:ec2::254", true, true},
		{"64:ff9b::a9fe:a9fe", true, true},
		{"100.100.100.200", true, true},
		{"0.0.0.0", true, true},
		{"0.1.2.3", true, true},
		{"::", true, true},
		{"224.0.0.1", true, true},
		{"239.255.255.250", true, true},
		{"ff02::1", true, true},
		{"255.255.255.255", true, true},
	} {
		t.Run(tc.ip, func(t *testing.T) {
			t.Parallel()
			ip := netip.MustParseAddr(tc.ip)
			require.Equal(t, tc.closed, checkAddr(ip, false) != nil, "AllowPrivate=false")
			require.Equal(t, tc.open, checkAddr(ip, true) != nil, "AllowPrivate=true")
		})
	}
	require.Error(t, checkAddr(netip.Addr{}, true))
}

func TestDialControl(t *testing.T) {
	t.Parallel()
	control := dialControl(func(ip netip.Addr) error { return checkAddr(ip, false) })
	require.NoError(t, control("tcp4", "93.184.215.14:443", nil))
	require.Error(t, control("tcp4", "127.0.0.1:80", nil))
	require.Error(t, control("tcp6", "[::ffff:127.0.0.1]:80", nil))
	require.Error(t, control("tcp6", "[fe80::1%lo]:80", nil))
	require.Error(t, control("tcp", "localhost:80", nil), "an unresolved name is never dialled")
}

func TestHostIP(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ host, want string }{
		{"127.0.0.1", "127.0.0.1"},
		{"2130706433", "127.0.0.1"},
		{"0x7f000001", "127.0.0.1"},
		{"0X7F000001", "127.0.0.1"},
		{"0x7f.1", "127.0.0.1"},
		{"0177.0.0.1", "127.0.0.1"},
		{"0177.0.0.01", "127.0.0.1"},
		{"127.1", "127.0.0.1"},
		{"127.0.1", "127.0.0.1"},
		{"127.0.0.1.", "127.0.0.1"},
		{"0", "0.0.0.0"},
		{"0x", "0.0.0.0"},
		{"2852039166", "169.254.169.254"},
		{"[::1]", "::1"},
		{"::ffff:127.0.0.1", "::ffff:127.0.0.1"},
		{"example.com", ""},
		{"localhost", ""},
		{"1.2.3.4.5", ""},
		{"256.1.1.1", ""},
		{"1.2.3.256", ""},
		{"1.2.65536", ""},
		{"4294967296", ""},
		{"08", ""},
		{"0xg", ""},
		{"1..2", ""},
		{"", ""},
	} {
		t.Run(tc.host, func(t *testing.T) {
			t.Parallel()
			ip, ok := hostIP(tc.host)
			if tc.want == "" {
				require.False(t, ok, "got %v", ip)
				return
			}
			require.True(t, ok)
			require.Equal(t, tc.want, ip.String())
		})
	}
}

// TestHTTPRegistered is not parallel: it swaps the registered runner's config.
func TestHTTPRegistered(t *testing.T) {
	spec, ok := Lookup(flow.TypeHTTPRequest)
	require.True(t, ok)
	require.False(t, spec.Pure, "HTTP_REQUEST has side effects and runs from a task")
	require.False(t, NewHTTP(HTTPConfig{}).Pure)

	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") }))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { ConfigureHTTP(HTTPConfig{}) })
	in := httpInput(t, urlConfig, map[string]any{"url": srv.URL})

	_, err := spec.Runner.Run(context.Background(), in)
	requireNodeError(t, err, "address_not_allowed", false)

	ConfigureHTTP(HTTPConfig{AllowPrivate: true})
	out, err := spec.Runner.Run(context.Background(), in)
	require.NoError(t, err)
	require.Equal(t, "ok", out.(map[string]any)["body"])

	ConfigureHTTP(HTTPConfig{})
	_, err = spec.Runner.Run(context.Background(), in)
	requireNodeError(t, err, "address_not_allowed", false)
}
