package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	goredis "github.com/redis/go-redis/v9"

	"github.com/weftdev/weft/events"
	natsembed "github.com/weftdev/weft/events/embedded"
	"github.com/weftdev/weft/ingress"
	"github.com/weftdev/weft/persistence"
	mongostore "github.com/weftdev/weft/persistence/mongo"
	"github.com/weftdev/weft/persistence/redis"
	"github.com/weftdev/weft/persistence/sqlite"
	"github.com/weftdev/weft/providers"
	"github.com/weftdev/weft/workers"
	"github.com/weftdev/weft/workers/flow"
	"github.com/weftdev/weft/workers/nodes"
	"github.com/weftdev/weft/workers/projector"
)

// Modes of a Weft process.
const (
	ModeDev    = "dev"
	ModeServe  = "serve"
	ModeWorker = "worker"
)

// Roles a process can run.
var knownRoles = []string{"ingress", "workers", "projector"}

// Config is everything a Weft process is told. cmd fills it from flags and
// the environment; tests fill it directly.
type Config struct {
	Mode        string
	Addr        string // HTTP listen address; "127.0.0.1:0" picks a free port
	DataDir     string // dev: where the embedded servers keep their data
	NATSURL     string // "" in dev: embedded
	MongoURI    string // "" in dev: embedded SQLite store
	RedisURL    string // "" in dev: embedded
	RedisPrefix string
	NATSPort    int // embedded NATS port, 0 for a free one
	RedisPort   int // embedded Redis port, 0 for a free one
	Roles       []string
	Types       []string // node types this process runs tasks for; empty: all
	JWTSecret   string   // dev: generated and kept in DataDir when empty

	HopPerNode        bool // send pure nodes through JetStream too (benchmarks compare)
	NATSSyncAlways    bool // embedded NATS fsyncs every write
	StreamReplicas    int
	Concurrency       int
	NodeTimeout       time.Duration // default node timeout; tasks' AckWait is twice it
	EventsMaxBytes    int64         // retention of WEFT_EVENTS; 0: 30 MiB in dev, 1 GiB otherwise
	EventsMaxMsgs     int64         // retention of WEFT_EVENTS in events; 0: 100,000 in dev, 1,000,000 otherwise
	MaxOutputBytes    int           // one node's output, as JSON; 0: workers.DefaultMaxOutputBytes
	MaxExecutionBytes int           // one execution's inputs and outputs, as JSON; 0: workers.DefaultMaxExecutionBytes

	CORSOrigins    []string
	Admins         []string // operators: emails or user ids (see ingress.Config.Admins)
	RatePerMinute  int
	RateFailClosed bool
	BcryptCost     int // 0: bcrypt's default
	LogLevel       string
	SSEHeartbeat   time.Duration // 0: 15 s

	// AI configures the providers of AI_PROCESSOR nodes: keys, base URLs,
	// models, routes. cmd fills it from the environment
	// (providers.ConfigFromEnv); without keys no provider is configured and
	// AI nodes fail with ai_not_configured.
	AI providers.Config
}

// Validate checks the config and fills in defaults.
func (c *Config) Validate() error {
	var problems []string
	if c.Addr == "" {
		c.Addr = "127.0.0.1:8080"
	}
	if c.RedisPrefix == "" {
		c.RedisPrefix = "weft:"
	}
	if c.RatePerMinute <= 0 {
		c.RatePerMinute = 1200
	}
	switch c.Mode {
	case ModeDev:
		if c.DataDir == "" {
			c.DataDir = "./.weft"
		}
		if len(c.Roles) == 0 {
			c.Roles = knownRoles
		}
	case ModeWorker:
		c.Roles = []string{"workers"}
		if c.NATSURL == "" {
			problems = append(problems, "WEFT_NATS_URL (--nats) is required by weft worker")
		}
		if c.MongoURI == "" && c.DataDir == "" {
			problems = append(problems, "weft worker needs WEFT_MONGO_URI (--mongo), or --data for a SQLite store shared on one host")
		}
		if c.JWTSecret == "" {
			// Every starter must check a direct submission's token alike.
			problems = append(problems, "WEFT_JWT_SECRET is required by weft worker")
		}
	case ModeServe:
		for name, v := range map[string]string{"WEFT_NATS_URL (--nats)": c.NATSURL, "WEFT_MONGO_URI (--mongo)": c.MongoURI, "WEFT_REDIS_URL (--redis)": c.RedisURL, "WEFT_JWT_SECRET": c.JWTSecret} {
			if v == "" {
				problems = append(problems, name+" is required by weft serve")
			}
		}
		if len(c.Roles) == 0 {
			problems = append(problems, "--roles names no role")
		}
		for _, r := range c.Roles {
			if !slices.Contains(knownRoles, r) {
				problems = append(problems, fmt.Sprintf("unknown role %q (roles: %s)", r, strings.Join(knownRoles, ", ")))
			}
		}
	default:
		problems = append(problems, fmt.Sprintf("unknown mode %q", c.Mode))
	}
	if c.JWTSecret != "" && len(c.JWTSecret) < 32 {
		problems = append(problems, "WEFT_JWT_SECRET must be at least 32 characters")
	}
	if len(problems) > 0 {
		slices.Sort(problems)
		return errors.New("config: " + strings.Join(problems, "; "))
	}
	return nil
}

// Main is one running Weft process. Run starts it; Close stops it. Tests
// use it exactly as the command does.
type Main struct {
	Config Config
	Log    *slog.Logger

	// Filled by Run.
	APIURL   string
	NATSURL  string
	StoreURL string
	RedisURL string

	closers []func()
	nc      *nats.Conn
	js      jetstream.JetStream
	store   persistence.Store
	rdb     goredis.UniversalClient
	auth    *ingress.Auth
	// submitKey signs and verifies the submissions the ingress hands to
	// the starter; derived from the shared secret.
	submitKey []byte
	router    *providers.Router
	engine    *workers.Engine
	api       *ingress.Server
	// results takes the results of executions that end here to the
	// requests waiting here, when the process has both roles.
	results *events.LocalResults
}

// Run starts every part of the process and returns once it serves.
func (m *Main) Run(ctx context.Context) error {
	if m.Log == nil {
		m.Log = slog.New(slog.DiscardHandler)
	}
	c := &m.Config
	if err := c.Validate(); err != nil {
		return err
	}
	if c.Mode == ModeDev {
		if err := os.MkdirAll(c.DataDir, 0o700); err != nil {
			return fmt.Errorf("data dir: %w", err)
		}
	}
	steps := []func(context.Context) error{m.startNATS, m.startStore, m.startRedis, m.startAuth, m.startAI, m.startEngine, m.startProjector, m.startIngress}
	for _, step := range steps {
		if err := step(ctx); err != nil {
			return err
		}
	}
	return nil
}

// onClose registers cleanup, run in reverse order by Close.
func (m *Main) onClose(f func()) { m.closers = append(m.closers, f) }

// Close stops everything Run started, newest first.
func (m *Main) Close() {
	for i := len(m.closers) - 1; i >= 0; i-- {
		m.closers[i]()
	}
	m.closers = nil
}

func (m *Main) startNATS(ctx context.Context) error {
	url := m.Config.NATSURL
	var embedded *natsserver.Server
	opts := []nats.Option{nats.Name("weft"), nats.MaxReconnects(-1), nats.ReconnectWait(250 * time.Millisecond)}
	if url == "" {
		port := m.Config.NATSPort
		if port == 0 {
			port = natsserver.RANDOM_PORT
		}
		ns, err := natsserver.NewServer(&natsserver.Options{
			ServerName: "weft-dev",
			Host:       "127.0.0.1",
			Port:       port,
			JetStream:  true,
			StoreDir:   filepath.Join(m.Config.DataDir, "nats"),
			NoSigs:     true,
			NoLog:      true,
			SyncAlways: m.Config.NATSSyncAlways,
		})
		if err != nil {
			return fmt.Errorf("embedded nats: %w", err)
		}
		ns.Start()
		if !ns.ReadyForConnections(10 * time.Second) {
			ns.Shutdown()
			return errors.New("embedded nats did not start")
		}
		m.onClose(func() { ns.Shutdown(); ns.WaitForShutdown() })
		url = ns.ClientURL()
		// This process talks to its own server through memory, not a
		// loopback socket: no system call per message. Others (the nats
		// CLI, direct publishers) use the URL.
		opts = append(opts, nats.InProcessServer(ns))
		embedded = ns
	}
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return fmt.Errorf("nats %s: %w", redact(url), err)
	}
	m.onClose(func() { _ = nc.Drain(); waitClosed(nc) })
	var resultsNC *nats.Conn
	if slices.Contains(m.Config.Roles, "ingress") && slices.Contains(m.Config.Roles, "workers") {
		// Results handed over in process go out on a connection of their
		// own that does not echo them to the waiters here (see
		// events.LocalResults).
		resultsNC, err = nats.Connect(url, append(opts, nats.Name("weft-results"), nats.NoEcho())...)
		if err != nil {
			return fmt.Errorf("nats %s: %w", redact(url), err)
		}
		m.onClose(func() { _ = resultsNC.Drain(); waitClosed(resultsNC) })
	}
	if m.results, err = events.NewLocalResults(resultsNC); err != nil {
		return err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	if err := workers.EnsureStreams(ctx, js, m.settings()); err != nil {
		return err
	}
	if embedded != nil {
		if n, err := natsembed.Tune(embedded, natsembed.Dev); err != nil {
			// Only memory is at stake: the other streams keep the default.
			m.Log.Warn("embedded nats: not every stream tuned", "tuned", n, "err", err)
		}
	}
	m.nc, m.js, m.NATSURL = nc, js, url
	return nil
}

// readiness is what /readyz checks: NATS (both connections, when results
// have one of their own), the store and Redis.
func (m *Main) readiness() []ingress.Check {
	return []ingress.Check{
		{Name: "nats", Ping: func(ctx context.Context) error {
			ctx, cancel := context.WithTimeout(ctx, 5*time.Second) // a flush needs a deadline
			defer cancel()
			if err := m.nc.FlushWithContext(ctx); err != nil {
				return err
			}
			if rc := m.results.Conn(); rc != nil {
				return rc.FlushWithContext(ctx)
			}
			return nil
		}},
		{Name: "store", Ping: m.store.Ping},
		{Name: "redis", Ping: func(ctx context.Context) error { return m.rdb.Ping(ctx).Err() }},
	}
}

func (m *Main) settings() events.Settings {
	maxBytes := m.Config.EventsMaxBytes
	if maxBytes == 0 && m.Config.Mode == ModeDev {
		// One machine's worth: every retained execution costs the embedded
		// server memory for its subjects, and dev needs days of history
		// less than it needs a flat footprint. Under 32 MiB the server
		// also cuts the stream into 4 MB blocks instead of 8 MB ones (1 MB
		// once natsembed.Tune has run), and it keeps the recent blocks in
		// memory: 30 MiB (about 80,000 events) took 20 to 40 MB off the
		// process under full load.
		maxBytes = 30 << 20
	}
	maxMsgs := m.Config.EventsMaxMsgs
	if maxMsgs == 0 && m.Config.Mode == ModeDev {
		// The embedded server indexes every execution's subjects in this
		// process: 100,000 events are about 30 MB of it.
		maxMsgs = 100_000
	}
	return events.Settings{Replicas: m.Config.StreamReplicas, NodeTimeout: m.Config.NodeTimeout,
		EventsMaxBytes: maxBytes, EventsMaxMsgs: maxMsgs}
}

// startAuth builds the credential checker the API and the starter share.
func (m *Main) startAuth(ctx context.Context) error {
	secret, err := m.jwtSecret()
	if err != nil {
		return err
	}
	m.submitKey = events.SubmissionKey(secret)
	var cache *redis.Cache
	if m.rdb != nil {
		cache = redis.NewCache(m.rdb, m.Config.RedisPrefix)
		m.onClose(cache.Close)
	}
	m.auth, err = ingress.NewAuth(ingress.AuthConfig{Secret: secret, BcryptCost: m.Config.BcryptCost}, m.store, cache, m.Log, nil)
	if err != nil {
		return err
	}
	stop, err := m.auth.Listen(m.nc)
	if err != nil {
		return err
	}
	m.onClose(stop)
	return nil
}

// startProjector runs the projector role: dashboard counters in Redis,
// built from the event stream.
func (m *Main) startProjector(ctx context.Context) error {
	if !slices.Contains(m.Config.Roles, "projector") || m.rdb == nil {
		return nil
	}
	p := projector.New(m.js, m.rdb, m.Config.RedisPrefix, m.Log)
	pctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := p.Run(pctx); err != nil {
			m.Log.Error("projector stopped", "err", err)
		}
	}()
	m.onClose(func() { cancel(); <-done })
	return nil
}

// startAI builds the AI router: its circuit state, quotas, usage and
// cache are shared through Redis with every other process.
func (m *Main) startAI(ctx context.Context) error {
	cfg := m.Config.AI
	if cfg.Providers == nil {
		cfg = providers.DefaultConfig()
	}
	cfg.KeyPrefix = m.Config.RedisPrefix // the router adds "ai:"
	if m.rdb == nil {
		m.Log.Warn("no WEFT_REDIS_URL: AI quotas, circuit state, usage and the answer cache stay in this process, not shared with the others")
	}
	r, err := providers.New(cfg, providers.Options{Redis: m.rdb, Logger: m.Log})
	if err != nil {
		return fmt.Errorf("ai providers: %w", err)
	}
	m.router = r
	m.onClose(r.Close)
	return nil
}

// publishToken shows a token of a running AI node to the execution's
// event streams (SSE). Best effort: a lost token is only a live view's,
// the node's output has the whole text.
func (m *Main) publishToken(executionID, nodeID, text string) {
	data, _ := json.Marshal(events.Token{ExecutionID: executionID, NodeID: nodeID, Text: text})
	_ = m.nc.Publish(events.TokenSubject(executionID, nodeID), data)
}

// startEngine builds the engine (the API compiles workflows with it) and,
// in the workers role, starts the starter, the reconciler and the pools.
func (m *Main) startEngine(ctx context.Context) error {
	verify := func(ctx context.Context, credential string) (string, error) {
		p, err := m.auth.Authenticate(ctx, credential)
		if err != nil {
			return "", err
		}
		return p.UserID, nil
	}
	e, err := workers.New(workers.Config{
		HopPerNode:        m.Config.HopPerNode,
		Concurrency:       m.Config.Concurrency,
		Settings:          m.settings(),
		SubmitKey:         m.submitKey,
		Results:           m.results,
		MaxOutputBytes:    m.Config.MaxOutputBytes,
		MaxExecutionBytes: m.Config.MaxExecutionBytes,
		Runners: map[string]nodes.Runner{
			// Side-effecting nodes on this process's store and router.
			flow.TypeDatabase:    nodes.NewDatabase(nodes.DatabaseConfig{Store: m.store}).Runner,
			flow.TypeAIProcessor: nodes.NewAI(nodes.AIConfig{Router: m.router, OnToken: m.publishToken}).Runner,
		},
		Log: m.Log,
	}, m.nc, m.js, m.store, verify)
	if err != nil {
		return err
	}
	m.engine = e
	if !slices.Contains(m.Config.Roles, "workers") {
		return nil
	}
	var types []string
	for _, t := range m.Config.Types {
		types = append(types, strings.ToUpper(t))
	}
	if len(types) == 0 {
		types = nodes.Types()
	}
	if err := e.Start(ctx, types); err != nil {
		return fmt.Errorf("engine: %w", err)
	}
	m.onClose(e.Stop)
	return nil
}

// waitClosed waits a bounded time for a draining connection to finish.
func waitClosed(nc *nats.Conn) {
	deadline := time.Now().Add(5 * time.Second)
	for !nc.IsClosed() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	nc.Close()
}

func (m *Main) startStore(ctx context.Context) error {
	if uri := m.Config.MongoURI; uri != "" {
		db := "weft"
		if u, err := url.Parse(uri); err == nil && strings.Trim(u.Path, "/") != "" {
			db = strings.Trim(u.Path, "/")
		}
		s, err := mongostore.Open(ctx, uri, db)
		if err != nil {
			return fmt.Errorf("store %s: %w", redact(uri), err)
		}
		m.store, m.StoreURL = s, redact(uri)
	} else {
		path := filepath.Join(m.Config.DataDir, "weft.db")
		s, err := sqlite.Open(ctx, path)
		if err != nil {
			return fmt.Errorf("store %s: %w", path, err)
		}
		abs, _ := filepath.Abs(path)
		m.store, m.StoreURL = s, "sqlite://"+abs
	}
	m.onClose(func() { _ = m.store.Close() })
	return nil
}

func (m *Main) startRedis(ctx context.Context) error {
	url := m.Config.RedisURL
	if url == "" && m.Config.Mode == ModeWorker {
		// A worker without Redis checks credentials against the store.
		return nil
	}
	if url == "" {
		e, err := redis.StartEmbedded(fmt.Sprintf("127.0.0.1:%d", m.Config.RedisPort))
		if err != nil {
			return fmt.Errorf("embedded redis: %w", err)
		}
		m.onClose(e.Close)
		url = e.URL()
	}
	// Over the loopback even to the embedded server: a client pipelines,
	// which an in-memory pipe (unbuffered) would deadlock.
	rdb, err := redis.Connect(ctx, url)
	if err != nil {
		return fmt.Errorf("redis %s: %w", redact(url), err)
	}
	m.onClose(func() { _ = rdb.Close() })
	m.rdb, m.RedisURL = rdb, redact(url)
	return nil
}

func (m *Main) startIngress(ctx context.Context) error {
	if !slices.Contains(m.Config.Roles, "ingress") {
		return nil
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	limit := redis.PerMinute(m.Config.RatePerMinute)
	cache := redis.NewCache(m.rdb, m.Config.RedisPrefix)
	m.onClose(cache.Close)
	api, err := ingress.New(ingress.Config{
		CORSOrigins:    m.Config.CORSOrigins,
		RateIP:         limit,
		RateUser:       limit,
		RateFailClosed: m.Config.RateFailClosed,
		SSEHeartbeat:   m.Config.SSEHeartbeat,
		Admins:         m.Config.Admins,
	}, ingress.Deps{
		Store:     m.store,
		Auth:      m.auth,
		NC:        m.nc,
		JS:        m.js,
		Graphs:    m.engine,
		Dashboard: projector.NewReader(m.rdb, m.Config.RedisPrefix),
		Cache:     cache,
		Limiter:   redis.NewLimiter(m.rdb, m.Config.RedisPrefix+"rate:"),
		Log:       m.Log,
		Registry:  reg,
		SubmitKey: m.submitKey,
		AI:        m.router,
		Results:   m.results,
		Checks:    m.readiness(),
	})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", m.Config.Addr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", m.Config.Addr, err)
	}
	served := make(chan struct{})
	go func() {
		defer close(served)
		if err := api.Serve(ln); err != nil && !errors.Is(err, net.ErrClosed) {
			m.Log.Error("http server stopped", "err", err)
		}
	}()
	m.onClose(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = api.Shutdown(sctx)
		// fasthttp closes only the listeners its Serve has registered: a
		// Close that comes before Serve got that far would leave it
		// accepting forever.
		_ = ln.Close()
		<-served
	})
	m.api, m.APIURL = api, "http://"+ln.Addr().String()
	return nil
}

// jwtSecret is the configured secret, or in dev one generated once and kept
// in the data dir so tokens survive a restart.
func (m *Main) jwtSecret() ([]byte, error) {
	if m.Config.JWTSecret != "" {
		return []byte(m.Config.JWTSecret), nil
	}
	if m.Config.Mode != ModeDev {
		return nil, errors.New("WEFT_JWT_SECRET is required")
	}
	path := filepath.Join(m.Config.DataDir, "jwt.secret")
	if b, err := os.ReadFile(path); err == nil && len(b) >= 32 {
		return b, nil
	}
	buf := make([]byte, 32)
	if _, err := rand.Read(buf); err != nil {
		return nil, err
	}
	secret := []byte(hex.EncodeToString(buf))
	if err := os.WriteFile(path, secret, 0o600); err != nil {
		return nil, fmt.Errorf("keep the jwt secret: %w", err)
	}
	return secret, nil
}

// PrintReady tells the user where everything is.
func (m *Main) PrintReady(w io.Writer) {
	fmt.Fprintf(w, "weft %s ready\n", m.Config.Mode)
	if m.APIURL != "" {
		fmt.Fprintf(w, "  API    %s\n", m.APIURL)
	}
	fmt.Fprintf(w, "  NATS   %s (JetStream)\n", m.NATSURL)
	fmt.Fprintf(w, "  store  %s\n", m.StoreURL)
	fmt.Fprintf(w, "  Redis  %s\n", m.RedisURL)
	fmt.Fprintf(w, "  roles  %s\n", strings.Join(m.Config.Roles, ","))
}

// redact hides the password of a URL before it is printed or logged.
func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.User == nil {
		return raw
	}
	if _, ok := u.User.Password(); ok {
		u.User = url.UserPassword(u.User.Username(), "xxxxx")
	}
	return u.String()
}
