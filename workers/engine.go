package workers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/weftdev/weft/events"
	"github.com/weftdev/weft/persistence"
	"github.com/weftdev/weft/workers/flow"
	"github.com/weftdev/weft/workers/nodes"
)

// RunStore is what the engine needs of the store.
type RunStore interface {
	persistence.Executions
	GetWorkflow(ctx context.Context, userID, id string) (*persistence.Workflow, error)
	GetWorkflowVersion(ctx context.Context, userID, id string, version int) (*persistence.Workflow, error)
}

// Verifier checks the credential a direct NATS submission carries and
// returns its user: the same check the HTTP API makes.
type Verifier func(ctx context.Context, credential string) (userID string, err error)

// Config is the engine's behaviour. The zero value is the default.
type Config struct {
	// HopPerNode sends every node, pure ones too, through JetStream as a
	// task. By default pure nodes run inline where their predecessors
	// finished: the same records and events, without the hops.
	HopPerNode bool
	// Concurrency is the number of messages each consumer works on at
	// once. Default 64.
	Concurrency int
	// Settings size the streams.
	Settings events.Settings
	// ReconcileEvery is how often executions stuck in queued or running are
	// looked for; ReconcileAfter is how old one must be. Defaults 30 s, 2 min.
	ReconcileEvery time.Duration
	ReconcileAfter time.Duration
	// Runners run node types with this engine's own dependencies (say, a
	// DATABASE runner on this engine's store), in place of the process-wide
	// registry's runner of that type. Purity is the registry's.
	Runners map[string]nodes.Runner
	// SubmitKey verifies the submissions the ingress signs
	// (events.SubmissionKey of the shared secret). Without it a signed
	// submission is refused.
	SubmitKey []byte
	// Results, when set, takes the results of executions that end here to
	// the waiters of this process before they go over NATS.
	Results *events.LocalResults
	// MaxOutputBytes caps one node's output, measured as its encoded JSON.
	// A node whose output is larger fails with output_too_large and
	// nothing of the output is kept. 0 means DefaultMaxOutputBytes (1 MiB).
	MaxOutputBytes int
	// MaxExecutionBytes caps what one execution holds: the encoded JSON of
	// its input plus every node output so far. The node that would pass it
	// fails with output_too_large. 0 means DefaultMaxExecutionBytes
	// (8 MiB, half of a MongoDB document's 16 MiB).
	MaxExecutionBytes int
	Log               *slog.Logger
	Now               func() time.Time
}

// Defaults of Config.MaxOutputBytes and Config.MaxExecutionBytes.
const (
	DefaultMaxOutputBytes    = 1 << 20
	DefaultMaxExecutionBytes = 8 << 20
)

// Engine runs executions.
type Engine struct {
	cfg    Config
	nc     *nats.Conn
	js     jetstream.JetStream
	store  RunStore
	verify Verifier
	log    *slog.Logger
	graphs *lru.Cache[string, *cachedGraph]

	id      string      // this engine's name in leases
	leading atomic.Bool // holds the reconciler's lease

	mu      sync.Mutex
	running map[string]map[*int]context.CancelFunc // execution id → cancels of its running nodes
	stops   []func()
}

type cachedGraph struct {
	userID string
	graph  *flow.Graph
}

// New returns an engine; Start makes it work.
func New(cfg Config, nc *nats.Conn, js jetstream.JetStream, store RunStore, verify Verifier) (*Engine, error) {
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 64
	}
	if cfg.ReconcileEvery <= 0 {
		cfg.ReconcileEvery = 30 * time.Second
	}
	if cfg.ReconcileAfter <= 0 {
		cfg.ReconcileAfter = 2 * time.Minute
	}
	if cfg.MaxOutputBytes <= 0 {
		cfg.MaxOutputBytes = DefaultMaxOutputBytes
	}
	if cfg.MaxExecutionBytes <= 0 {
		cfg.MaxExecutionBytes = DefaultMaxExecutionBytes
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	graphs, err := lru.New[string, *cachedGraph](4096)
	if err != nil {
		return nil, err
	}
	return &Engine{cfg: cfg, nc: nc, js: js, store: store, verify: verify, log: cfg.Log, graphs: graphs, id: nuid.Next(),
		running: map[string]map[*int]context.CancelFunc{}}, nil
}

// spec is how this engine runs a node type.
func (e *Engine) spec(nodeType string) (nodes.Spec, bool) {
	spec, ok := nodes.Lookup(nodeType)
	if r, mine := e.cfg.Runners[nodeType]; mine && ok {
		spec.Runner = r
	}
	return spec, ok
}

// EnsureStreams creates or updates every stream.
func EnsureStreams(ctx context.Context, js jetstream.JetStream, s events.Settings) error {
	for _, sc := range events.Streams(s) {
		// A stream already as declared is left alone: every process
		// declares the streams as it starts, and an update racing another
		// process's consumer creation trips a data race in nats-server
		// (v2.15: the file store's config is read without its lock).
		if st, err := js.Stream(ctx, sc.Name); err == nil && sameStream(sc, st.CachedInfo().Config) {
			continue
		}
		if _, err := js.CreateOrUpdateStream(ctx, sc); err != nil {
			return fmt.Errorf("stream %s: %w", sc.Name, err)
		}
	}
	return nil
}

// sameStream reports whether have has every setting that events.Streams
// gives want; the server fills the settings left unset (0 reads as -1,
// "no limit", for the limits).
func sameStream(want, have jetstream.StreamConfig) bool {
	limit := func(v int64) int64 {
		if v == 0 {
			return -1
		}
		return v
	}
	return slices.Equal(want.Subjects, have.Subjects) && want.Retention == have.Retention &&
		want.Storage == have.Storage && max(want.Replicas, 1) == max(have.Replicas, 1) &&
		want.Duplicates == have.Duplicates && want.Discard == have.Discard && want.MaxAge == have.MaxAge &&
		limit(int64(want.MaxMsgSize)) == limit(int64(have.MaxMsgSize)) &&
		limit(want.MaxMsgs) == limit(have.MaxMsgs) && limit(want.MaxBytes) == limit(have.MaxBytes)
}

// Start declares the streams and starts the starter, the reconciler and a
// pool for each of types (upper-case node types).
func (e *Engine) Start(ctx context.Context, types []string) error {
	if err := EnsureStreams(ctx, e.js, e.cfg.Settings); err != nil {
		return err
	}
	// A cancelled or failed execution's running nodes are told to stop.
	for _, kind := range []string{events.KindCancelled, events.KindFailed} {
		sub, err := e.nc.Subscribe(events.EventKindFilter(kind), e.onCancelled)
		if err != nil {
			return err
		}
		e.stops = append(e.stops, func() { _ = sub.Unsubscribe() })
	}
	if err := e.consume(ctx, events.StreamSubmit, events.StarterConsumer(e.cfg.Settings), e.handleSubmit); err != nil {
		return err
	}
	for _, t := range types {
		if _, ok := e.spec(t); !ok {
			return fmt.Errorf("no runner for node type %s", t)
		}
		if err := e.consume(ctx, events.StreamTasks, events.TaskConsumerConfig(t, e.cfg.Settings), e.handleTask); err != nil {
			return err
		}
	}
	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	go func() { defer close(done); e.reconcileLoop(rctx) }()
	e.stops = append(e.stops, func() { cancel(); <-done })
	return nil
}

// Stop stops taking messages, finishes those in hand, and returns.
func (e *Engine) Stop() {
	for i := len(e.stops) - 1; i >= 0; i-- {
		e.stops[i]()
	}
	e.stops = nil
}

// consume runs handle on the consumer's messages, Concurrency at a time:
// one Consume callback hands them to a workerPool, and waits while
// Concurrency of its goroutines are busy. A process runs a pool per node
// type, most of them idle most of the time: a fixed set of 64 goroutines
// each was stack memory that every collection visited.
func (e *Engine) consume(ctx context.Context, stream string, cc jetstream.ConsumerConfig, handle func(context.Context, jetstream.Msg)) error {
	cons, err := e.js.CreateOrUpdateConsumer(ctx, stream, cc)
	if err != nil {
		return fmt.Errorf("consumer %s: %w", cc.Durable, err)
	}
	pool := newWorkerPool(e.cfg.Concurrency, idleWorker)
	hctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	sub, err := cons.Consume(func(m jetstream.Msg) {
		if !pool.run(func() { e.safely(hctx, cc.Durable, handle, m) }) {
			_ = m.Nak() // stopping: another process, or the next start, takes it
		}
	},
		jetstream.PullMaxMessages(2*e.cfg.Concurrency),
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			if !errors.Is(err, jetstream.ErrNoHeartbeat) {
				e.log.Debug("consume", "consumer", cc.Durable, "err", err)
			}
		}))
	if err != nil {
		cancel()
		pool.close()
		return err
	}
	e.stops = append(e.stops, func() {
		sub.Drain()
		// The tasks that run finish; the messages still buffered for the
		// callback are given back (Nak) rather than run, so that stopping
		// takes as long as the longest task, not the whole buffer.
		pool.close()
		<-sub.Closed()
		cancel()
	})
	return nil
}

// idleWorker is how long a goroutine of a consumer's pool waits for a
// message before it ends.
const idleWorker = 10 * time.Second

// safely runs a handler; a panic is logged and the message redelivered
// later, so a poison message reaches MaxDeliver instead of killing the
// worker.
func (e *Engine) safely(ctx context.Context, consumer string, handle func(context.Context, jetstream.Msg), m jetstream.Msg) {
	defer func() {
		if r := recover(); r != nil {
			e.log.Error("handler panicked", "consumer", consumer, "subject", m.Subject(), "panic", r, "stack", string(debug.Stack()))
			if md, err := m.Metadata(); err == nil && md.NumDelivered >= 3 {
				// The handler keeps panicking: give up on it for good, and on
				// the execution it names. The panic's text stays in the log.
				id := messageExecution(m)
				reason := events.Errorf(events.CodeInternal, "the worker failed on this message %d times", md.NumDelivered)
				e.reject(ctx, m, id, reason)
				e.failExecution(ctx, id, reason)
				return
			}
			_ = m.NakWithDelay(time.Second)
		}
	}()
	handle(ctx, m)
}

// messageExecution is the execution a task or submission names, if any.
func messageExecution(m jetstream.Msg) string {
	var v struct {
		Task string `json:"e"`
		Sub  string `json:"executionId"`
	}
	if json.Unmarshal(m.Data(), &v) != nil {
		return ""
	}
	if v.Task != "" {
		return v.Task
	}
	return v.Sub
}

// graph returns the compiled graph of one workflow version, compiled once
// per process.
func (e *Engine) graph(ctx context.Context, userID, workflowID string, version int) (*flow.Graph, error) {
	key := fmt.Sprintf("%s:%d", workflowID, version)
	if c, ok := e.graphs.Get(key); ok && c.userID == userID {
		return c.graph, nil
	}
	w, err := e.store.GetWorkflowVersion(ctx, userID, workflowID, version)
	if err != nil {
		return nil, err
	}
	g, err := compileStored(w)
	if err != nil {
		return nil, err
	}
	e.graphs.Add(key, &cachedGraph{userID: userID, graph: g})
	return g, nil
}

// Graph returns the compiled graph of a stored workflow version, from the
// process's cache when it has it.
func (e *Engine) Graph(ctx context.Context, w *persistence.Workflow) (*flow.Graph, error) {
	key := fmt.Sprintf("%s:%d", w.ID, w.Version)
	if c, ok := e.graphs.Get(key); ok && c.userID == w.UserID {
		return c.graph, nil
	}
	g, err := compileStored(w)
	if err != nil {
		return nil, err
	}
	e.graphs.Add(key, &cachedGraph{userID: w.UserID, graph: g})
	return g, nil
}

func compileStored(w *persistence.Workflow) (*flow.Graph, error) {
	def, problems := flow.Parse(w.Definition)
	if len(problems) > 0 {
		return nil, fmt.Errorf("stored workflow %s v%d no longer validates: %s", w.ID, w.Version, problems[0].Message)
	}
	return flow.Compile(def)
}

// track registers the cancel func of a node running for an execution, so a
// cancel event stops it; the returned func unregisters it.
func (e *Engine) track(executionID string, cancel context.CancelFunc) func() {
	key := new(int)
	e.mu.Lock()
	m := e.running[executionID]
	if m == nil {
		m = map[*int]context.CancelFunc{}
		e.running[executionID] = m
	}
	m[key] = cancel
	e.mu.Unlock()
	return func() {
		e.mu.Lock()
		delete(m, key)
		if len(m) == 0 {
			delete(e.running, executionID)
		}
		e.mu.Unlock()
	}
}

// onCancelled stops the nodes this process runs for a cancelled execution.
func (e *Engine) onCancelled(msg *nats.Msg) {
	id := executionOf(msg.Subject)
	e.mu.Lock()
	for _, cancel := range e.running[id] {
		cancel()
	}
	e.mu.Unlock()
}

// executionOf reads the execution id out of weft.events.<id>.<kind>.
func executionOf(subject string) string {
	const prefix = "weft.events."
	if len(subject) <= len(prefix) {
		return ""
	}
	rest := subject[len(prefix):]
	for i := len(rest) - 1; i >= 0; i-- {
		if rest[i] == '.' {
			return rest[:i]
		}
	}
	return rest
}
