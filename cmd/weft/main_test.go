package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/weftdev/weft/events"
	"github.com/weftdev/weft/persistence/mongo/mongotest"
	"github.com/weftdev/weft/workers/nodes"
)

// bundle is one running `weft dev` wiring and a client for its API.
type bundle struct {
	main *Main
	url  string
	dir  string
}

type option func(*Config)

// setup starts a real `weft dev` wiring: embedded NATS, the embedded SQLite
// store, and Redis (real when WEFT_TEST_REDIS_URL is set, else embedded),
// on free ports in a temp dir.
func setup(t *testing.T, opts ...option) *bundle {
	t.Helper()
	dir := t.TempDir()
	cfg := Config{
		Mode:        ModeDev,
		Addr:        "127.0.0.1:0",
		DataDir:     dir,
		RedisURL:    os.Getenv("WEFT_TEST_REDIS_URL"),
		RedisPrefix: "test:" + randomHex(t) + ":",
		BcryptCost:  4, // the minimum: tests register many users
	}
	for _, o := range opts {
		o(&cfg)
	}
	return start(t, cfg)
}

func start(t *testing.T, cfg Config) *bundle {
	t.Helper()
	m := &Main{Config: cfg}
	require.NoError(t, m.Run(context.Background()))
	t.Cleanup(m.Close)
	return &bundle{main: m, url: m.APIURL, dir: cfg.DataDir}
}

func randomHex(t *testing.T) string {
	b := make([]byte, 6)
	_, err := rand.Read(b)
	require.NoError(t, err)
	return hex.EncodeToString(b)
}

// response is an API answer: status, headers and the decoded JSON body.
type response struct {
	Status int
	Header http.Header
	Body   map[string]any
	Raw    []byte
}

// call sends a request. body may be nil, a string (sent as is) or any value
// (sent as JSON). token, when set, goes in Authorization: Bearer.
func (b *bundle) call(t *testing.T, method, path, token string, body any, headers ...string) response {
	t.Helper()
	var rd io.Reader
	switch v := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(v)
	case []byte:
		rd = bytes.NewReader(v)
	default:
		raw, err := json.Marshal(v)
		require.NoError(t, err)
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, b.url+path, rd)
	require.NoError(t, err)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	out := response{Status: res.StatusCode, Header: res.Header, Raw: raw}
	if len(raw) > 0 && strings.HasPrefix(res.Header.Get("Content-Type"), "application/json") {
		require.NoError(t, json.Unmarshal(raw, &out.Body), string(raw))
	}
	return out
}

// user is a registered account with its tokens.
type user struct {
	ID, Email, Password, Token, Refresh string
}

func (b *bundle) register(t *testing.T) user {
	t.Helper()
	return b.registerAs(t, "u"+randomHex(t)+"@example.com")
}

// operatorEmail is the operator that withOperator names.
const operatorEmail = "ops@example.com"

// withOperator makes operatorEmail an operator (see Config.Admins).
func withOperator(c *Config) { c.Admins = []string{"OPS@example.com "} }

func (b *bundle) registerAs(t *testing.T, email string) user {
	t.Helper()
	u := user{Email: email, Password: "correct horse battery"}
	res := b.call(t, "POST", "/api/auth/register", "", map[string]any{"email": u.Email, "password": u.Password, "name": "Ada"})
	require.Equal(t, 201, res.Status, string(res.Raw))
	u.ID = res.Body["user"].(map[string]any)["id"].(string)
	u.Token = res.Body["token"].(string)
	u.Refresh = res.Body["refreshToken"].(string)
	return u
}

// requireError checks the contract's error shape, the code, and that one
// detail names path (when path is not "-").
func requireError(t *testing.T, res response, status int, code, path string) {
	t.Helper()
	require.Equal(t, status, res.Status, string(res.Raw))
	e, ok := res.Body["error"].(map[string]any)
	require.True(t, ok, "error shape: %s", res.Raw)
	require.Equal(t, code, e["code"], string(res.Raw))
	require.NotEmpty(t, e["message"])
	details, ok := e["details"].([]any)
	require.True(t, ok, "details must be an array: %s", res.Raw)
	if path == "-" {
		return
	}
	var paths []string
	for _, d := range details {
		paths = append(paths, d.(map[string]any)["path"].(string))
	}
	require.Contains(t, paths, path, string(res.Raw))
}

func TestDevStartsAndKeepsDataAcrossRestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfg := Config{Mode: ModeDev, Addr: "127.0.0.1:0", DataDir: dir, RedisURL: os.Getenv("WEFT_TEST_REDIS_URL"), RedisPrefix: "test:" + randomHex(t) + ":", BcryptCost: 4}

	m := &Main{Config: cfg}
	began := time.Now()
	require.NoError(t, m.Run(context.Background()))
	require.Less(t, time.Since(began), 5*time.Second)
	var out bytes.Buffer
	m.PrintReady(&out)
	for _, want := range []string{"API    http://127.0.0.1:", "NATS   nats://127.0.0.1:", "store  sqlite://", "Redis  redis://"} {
		require.Contains(t, out.String(), want)
	}
	b := &bundle{main: m, url: m.APIURL, dir: dir}
	u := b.register(t)
	wf := b.call(t, "POST", "/api/workflows", u.Token, exampleWorkflow())
	require.Equal(t, 201, wf.Status, string(wf.Raw))
	m.Close()

	_, err := os.Stat(filepath.Join(dir, "jwt.secret"))
	require.NoError(t, err)

	b2 := start(t, cfg)
	// The token from before the restart still works: the secret is kept.
	me := b2.call(t, "GET", "/api/auth/me", u.Token, nil)
	require.Equal(t, 200, me.Status, string(me.Raw))
	login := b2.call(t, "POST", "/api/auth/login", "", map[string]any{"email": u.Email, "password": u.Password})
	require.Equal(t, 200, login.Status, string(login.Raw))
	got := b2.call(t, "GET", "/api/workflows/"+wf.Body["id"].(string), u.Token, nil)
	require.Equal(t, 200, got.Status, string(got.Raw))
	require.Equal(t, "Triage a ticket", got.Body["name"])
}

func TestHealthAndMetrics(t *testing.T) {
	t.Parallel()
	b := setup(t, withOperator)
	require.Equal(t, 200, b.call(t, "GET", "/healthz", "", nil).Status)
	ready := b.call(t, "GET", "/readyz", "", nil)
	require.Equal(t, 200, ready.Status, string(ready.Raw))
	require.Len(t, ready.Body["checks"], 3)
	for _, c := range ready.Body["checks"].([]any) {
		require.Equal(t, "up", c.(map[string]any)["status"])
	}
	u := b.register(t)
	requireError(t, b.call(t, "GET", "/api/dashboard/health", u.Token, nil), 403, "forbidden", "-")
	u = b.registerAs(t, operatorEmail)
	h := b.call(t, "GET", "/api/dashboard/health", u.Token, nil)
	require.Equal(t, 200, h.Status)
	require.Equal(t, "healthy", h.Body["status"])
	lags := map[string]map[string]any{}
	for _, c := range h.Body["consumers"].([]any) {
		lags[c.(map[string]any)["consumer"].(string)] = c.(map[string]any)
	}
	require.EqualValues(t, 0, lags["starter"]["pending"])
	require.EqualValues(t, 0, lags["tasks-transform"]["pending"])
	require.Equal(t, "TRANSFORM", lags["tasks-transform"]["nodeType"])
	require.Contains(t, lags, "tasks-database", "every node type has its consumer")
	metrics := b.call(t, "GET", "/metrics", "", nil)
	require.Equal(t, 200, metrics.Status)
	require.Contains(t, string(metrics.Raw), "weft_http_requests_total")
}

func TestServeNeedsEveryURL(t *testing.T) {
	t.Parallel()
	m := &Main{Config: Config{Mode: ModeServe, Roles: []string{"ingress", "sideways"}}}
	err := m.Run(context.Background())
	require.Error(t, err)
	for _, want := range []string{"WEFT_NATS_URL", "WEFT_MONGO_URI", "WEFT_REDIS_URL", "WEFT_JWT_SECRET", `unknown role "sideways"`} {
		require.Contains(t, err.Error(), want)
	}
}

// TestDevUsesGivenURLs replaces the embedded NATS and Redis with servers
// given by URL.
func TestDevUsesGivenURLs(t *testing.T) {
	t.Parallel()
	other := setup(t)
	b := setup(t, func(c *Config) {
		c.NATSURL = other.main.NATSURL
		c.RedisURL = other.main.RedisURL
	})
	require.Equal(t, other.main.NATSURL, b.main.NATSURL)
	require.Equal(t, other.main.RedisURL, b.main.RedisURL)
	u := b.register(t)
	require.Equal(t, 200, b.call(t, "GET", "/api/auth/me", u.Token, nil).Status)
}

// TestEventHistoryIsBounded: the event stream keeps a bounded number of
// events, 100,000 by default in dev (each costs the embedded server memory
// for its subject), or what is configured.
func TestEventHistoryIsBounded(t *testing.T) {
	t.Parallel()
	for want, opt := range map[int64]option{
		100_000: func(*Config) {},
		5_000:   func(c *Config) { c.EventsMaxMsgs = 5_000 },
	} {
		b := setup(t, opt)
		st, err := b.main.js.Stream(context.Background(), events.StreamEvents)
		require.NoError(t, err)
		require.Equal(t, want, st.CachedInfo().Config.MaxMsgs)
	}
}

// ferret is the MongoDB-protocol server of the serve tests, started by the
// first test that needs it and stopped before the leak check.
var ferret struct {
	once sync.Once
	uri  string
	stop func()
	err  error
}

func mongoURI(t *testing.T) string {
	t.Helper()
	ferret.once.Do(func() { ferret.uri, ferret.stop, ferret.err = mongotest.Start() })
	require.NoError(t, ferret.err)
	return ferret.uri
}

func TestMain(m *testing.M) {
	// go-redis logs every failed dial; the Redis-down tests make many.
	goredis.SetLogger(quietRedis{})
	// The tests' remote web servers are httptest servers on loopback.
	nodes.ConfigureHTTP(nodes.HTTPConfig{AllowPrivate: true})
	code := m.Run()
	if ferret.stop != nil {
		ferret.stop()
	}
	// The tests' keep-alive connections to servers that are gone.
	http.DefaultClient.CloseIdleConnections()
	if code == 0 {
		err := goleak.Find(
			// fasthttp's worker pool sweeper sleeps out its interval after Stop.
			goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*workerPool).Start.func2"),
			// fasthttp's Date header clock is one goroutine per process, for good.
			goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.updateServerDate.func1"),
			// go-redis retries a dead server's dial once a second until Close is seen.
			goleak.IgnoreAnyFunction("github.com/redis/go-redis/v9/internal/pool.(*ConnPool).tryDial"))
		if err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

type quietRedis struct{}

func (quietRedis) Printf(context.Context, string, ...any) {}

// TestDevMemoryLimit: `weft dev` sets a soft memory limit unless
// GOMEMLIMIT chose one.
func TestDevMemoryLimit(t *testing.T) {
	before := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(before) })
	t.Setenv("GOMEMLIMIT", "")
	restore := devMemoryLimit()
	require.EqualValues(t, devMemoryLimitBytes, debug.SetMemoryLimit(-1))
	restore()
	require.Equal(t, before, debug.SetMemoryLimit(-1), "the limit before is put back")
	t.Setenv("GOMEMLIMIT", "1GiB")
	devMemoryLimit()()
	require.Equal(t, before, debug.SetMemoryLimit(-1), "GOMEMLIMIT given: left alone")
}

func TestDevLimitFollowsTheLiveHeap(t *testing.T) {
	if got := devLimit(10 << 20); got != devMemoryLimitBytes {
		t.Errorf("small heap: limit %d, want the least, %d", got, devMemoryLimitBytes)
	}
	if got := devLimit(200 << 20); got != 300<<20 {
		t.Errorf("200 MiB live: limit %d MiB, want 300", got>>20)
	}
}
