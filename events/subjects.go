package events

import (
	"bytes"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"sync"
	"time"

	gojson "github.com/goccy/go-json"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Subjects.
const (
	SubjectSubmit   = "weft.executions.submit"
	SubjectRun      = "weft.executions.run"
	subjectTasks    = "weft.tasks."
	subjectEvents   = "weft.events."
	subjectRejected = "weft.rejected."
)

// Stream names.
const (
	StreamSubmit   = "WEFT_SUBMIT"
	StreamTasks    = "WEFT_TASKS"
	StreamEvents   = "WEFT_EVENTS"
	StreamRejected = "WEFT_REJECTED"
)

// Durable consumer names.
const (
	ConsumerStarter   = "starter"
	ConsumerProjector = "projector"
	consumerTasks     = "tasks-"
)

// Message headers.
const (
	HeaderMsgID         = "Nats-Msg-Id"
	HeaderAPIKey        = "Weft-Api-Key"
	HeaderAuthorization = "Authorization"
	HeaderReason        = "Weft-Reason"
	// HeaderSignature marks a submission as an Admission signed by the
	// ingress (see SignAdmission).
	HeaderSignature = "Weft-Signature"
	// HeaderExecutionAt, on a result, is the byte offset of its
	// "execution" member's value (see Result).
	HeaderExecutionAt = "Weft-Execution-At"
)

// Event kinds: the last token of an event subject.
const (
	KindQueued    = "queued"
	KindStarted   = "started"
	KindNode      = "node"
	KindCompleted = "completed"
	KindFailed    = "failed"
	KindCancelled = "cancelled"
	KindRejected  = "rejected"
)

// TaskSubject is where tasks for nodes of one type go.
func TaskSubject(nodeType string) string { return subjectTasks + strings.ToLower(nodeType) }

// TaskConsumer is the durable consumer every pool of one node type shares.
func TaskConsumer(nodeType string) string { return consumerTasks + strings.ToLower(nodeType) }

// EventSubject is where one transition of one execution is published.
func EventSubject(executionID, kind string) string {
	return subjectEvents + executionID + "." + kind
}

// EventFilter matches every event of one execution.
func EventFilter(executionID string) string { return subjectEvents + executionID + ".>" }

// Result subjects carry each execution's end as the terminal event with
// the whole execution in it ("execution", as GET serves it), over core
// NATS, just before the terminal event is stored without it: a waiting
// request answers from it without reading the store, and the event stream
// does not hold a copy of every execution.
const subjectResults = "weft.results."

// ResultSubject is where one execution's result is published.
func ResultSubject(executionID string) string { return subjectResults + executionID }

// MaxResultExecution is the largest execution view a result carries: a
// larger one would pass the message size limit, so its result is the
// event alone, and a waiter reads the execution from the store.
const MaxResultExecution = 256 << 10

// Result is the message of an execution's result, built in b: the encoded
// event, with the execution's view, when there is one no larger than
// MaxResultExecution, added as its "execution" member. The view is
// appended to b by the encoder (a []byte or json.RawMessage is taken as
// encoded), after the event, rather than set on the event before encoding:
// the encoder would parse and compact the whole view again, as it does with
// every json.RawMessage, to check what was just encoded; a JSONAppender
// appends its own encoding, without the encoder. The header
// HeaderExecutionAt says where the view starts, so that a waiter takes it
// without decoding the result (see ResultExecution). A nil view leaves it
// out; so does one that cannot be encoded, or an event that is not a JSON
// object with members, and the error says why. The
// message's data is b's: it is valid while b is not reused.
func Result(b *bytes.Buffer, executionID string, event []byte, view any) (*nats.Msg, error) {
	m := nats.NewMsg(ResultSubject(executionID))
	m.Data = event
	encoded, isEncoded := view.([]byte)
	if raw, ok := view.(json.RawMessage); ok {
		encoded, isEncoded = raw, true
	}
	if view == nil || isEncoded && len(encoded) == 0 {
		return m, nil // no view, typed nil included
	}
	event = bytes.TrimSpace(event)
	if len(event) < 2 || event[0] != '{' || event[len(event)-1] != '}' || len(bytes.TrimSpace(event[1:len(event)-1])) == 0 {
		return m, errors.New("events: a result's event must be a JSON object with members")
	}
	b.Reset()
	b.Write(event[:len(event)-1]) // without its closing brace
	b.WriteString(`,"execution":`)
	at := b.Len()
	if isEncoded {
		b.Write(encoded)
	} else if a, ok := view.(JSONAppender); ok {
		out, err := a.AppendJSON(b.AvailableBuffer())
		if err != nil {
			return m, err
		}
		b.Write(out)
	} else {
		// Encode ends what it writes with a newline, which the closing
		// brace replaces.
		if err := gojson.NewEncoder(b).Encode(view); err != nil {
			return m, err
		}
		b.Truncate(b.Len() - 1)
	}
	if b.Len()-at > MaxResultExecution {
		return m, nil
	}
	b.WriteByte('}')
	m.Header.Set(HeaderExecutionAt, strconv.Itoa(at))
	m.Data = b.Bytes()
	return m, nil
}

// JSONAppender is a value that appends its own JSON encoding to a slice,
// faster than an encoder would make it: Result takes it as a view.
type JSONAppender interface {
	AppendJSON(b []byte) ([]byte, error)
}

// resultBufs recycles the buffers PublishResult builds results in; one
// that grew past a megabyte is let go.
var resultBufs = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// PublishResult publishes an execution's result (see Result), and first
// hands a copy to local, the waiters of this process, when there is one.
// It goes out on nc, or on local's own connection when it was handed over
// (see LocalResults); results and events may then reach another
// process's subscribers in either order. It is built in a recycled
// buffer, which the publish copies out: a result is sent once per
// execution, and a view is most of its bytes. A view that cannot be
// encoded is left out, and its error returned, with the result published
// all the same: waiters then read the execution from the store.
func PublishResult(nc *nats.Conn, local *LocalResults, executionID string, event []byte, view any) error {
	b := resultBufs.Get().(*bytes.Buffer)
	defer func() {
		if b.Cap() <= 1<<20 {
			resultBufs.Put(b)
		}
	}()
	m, encErr := Result(b, executionID, event, view)
	if local.deliver(m) && local.conn != nil {
		nc = local.conn // not echoed to the waiters it was handed to
	}
	return errors.Join(encErr, nc.PublishMsg(m))
}

// LocalResults hands the results of executions that end in this process
// to the requests waiting for them here, ahead of their copy over NATS: a
// request answered in the process that ran its execution (weft dev, or a
// process with both the ingress and the workers roles) skips a trip
// through the NATS server, about 0.1 ms at concurrency 1.
// The copy over NATS is still published, for waiters elsewhere. With a
// connection of its own (NewLocalResults), which this process's waiters
// subscribe on, that copy goes out on it and the server does not echo it
// back to them: a waiter answered here would have gone when it arrived,
// and reading a result to drop it costs about as much as handing it over.
// The zero value and nil deliver nothing.
type LocalResults struct {
	mu   sync.RWMutex
	to   func(*nats.Msg)
	conn *nats.Conn
}

// NewLocalResults returns a hand-over whose results go out on conn, which
// must not echo (nats.NoEcho), and on which the receiver's process
// subscribes to results (Conn). A nil conn publishes them on the
// publisher's connection.
func NewLocalResults(conn *nats.Conn) (*LocalResults, error) {
	if conn != nil && !conn.Opts.NoEcho {
		return nil, errors.New("events: the results connection must be made with nats.NoEcho")
	}
	return &LocalResults{conn: conn}, nil
}

// Conn is the connection to subscribe to results on in the receiver's
// process: the one the results handed over are published on, so that they
// are not delivered there twice. Nil when there is none.
func (l *LocalResults) Conn() *nats.Conn {
	if l == nil {
		return nil
	}
	return l.conn
}

// Receive sets where results go: one receiver at a time (the process's
// ingress), nil for none. The receiver may keep the message it is given.
func (l *LocalResults) Receive(to func(*nats.Msg)) {
	l.mu.Lock()
	l.to = to
	l.mu.Unlock()
}

// Receiving reports whether a receiver is set.
func (l *LocalResults) Receiving() bool {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.to != nil
}

// deliver hands the receiver a copy of m, whose data is about to be
// reused, and reports whether there was one.
func (l *LocalResults) deliver(m *nats.Msg) bool {
	if l == nil {
		return false
	}
	l.mu.RLock()
	to := l.to
	l.mu.RUnlock()
	if to == nil {
		return false
	}
	c := nats.NewMsg(m.Subject)
	c.Header = m.Header
	c.Data = bytes.Clone(m.Data)
	to(c)
	return true
}

// ResultExecution is the execution's view that a result carries, taken
// from where its header says; false when the result carries none, or
// what is there is not where Result puts a view.
func ResultExecution(m *nats.Msg) ([]byte, bool) {
	at, err := strconv.Atoi(m.Header.Get(HeaderExecutionAt))
	if err != nil || at <= 0 || at >= len(m.Data) || m.Data[len(m.Data)-1] != '}' ||
		!bytes.HasSuffix(m.Data[:at], []byte(`,"execution":`)) {
		return nil, false
	}
	return m.Data[at : len(m.Data)-1], true
}

// ResultFilter matches every execution's result.
const ResultFilter = subjectResults + "*"

// ExecutionOfResult is the execution id of a result subject.
func ExecutionOfResult(subject string) (string, bool) {
	return strings.CutPrefix(subject, subjectResults)
}

// Token subjects carry an AI node's text as it is generated, one message
// a delta. They are core NATS, outside every stream: storing each token
// would cost far more than a live view is worth, and the node's output
// holds the whole text once it ends.
const subjectTokens = "weft.tokens."

// TokenSubject is where one node's tokens are published.
func TokenSubject(executionID, nodeID string) string {
	return subjectTokens + executionID + "." + nodeID
}

// TokenFilter matches the tokens of every node of one execution.
func TokenFilter(executionID string) string { return subjectTokens + executionID + ".>" }

// EventKindFilter matches one kind of event of every execution.
func EventKindFilter(kind string) string { return subjectEvents + "*." + kind }

// RejectedSubject is where a refused request is kept, by the reason's code.
func RejectedSubject(code string) string { return subjectRejected + code }

// TerminalKind reports whether an event kind ends an execution.
func TerminalKind(kind string) bool {
	return kind == KindCompleted || kind == KindFailed || kind == KindCancelled
}

// Settings size the streams. The zero value means the defaults below.
type Settings struct {
	// Replicas of every stream: 1 on a single server, 3 on a production
	// cluster.
	Replicas int
	// Storage is file storage unless Memory is set (tests and benchmarks of
	// the engine's own cost).
	Memory bool
	// EventsMaxAge, EventsMaxBytes and EventsMaxMsgs bound the event
	// history that the projector rebuilds counters from. Default 7 days,
	// 1 GiB, 1,000,000 events. The count is what bounds the NATS server's
	// memory: it indexes every subject it holds, and each execution's
	// events have subjects of their own (about 300 bytes each).
	EventsMaxAge   time.Duration
	EventsMaxBytes int64
	EventsMaxMsgs  int64
	// NodeTimeout is the longest a node may run between two heartbeats;
	// task AckWait is set above it. Default 30 s.
	NodeTimeout time.Duration
}

// NodeTimeoutOrDefault is NodeTimeout, or its default when unset.
func (s Settings) NodeTimeoutOrDefault() time.Duration { return s.withDefaults().NodeTimeout }

func (s Settings) withDefaults() Settings {
	if s.Replicas == 0 {
		s.Replicas = 1
	}
	if s.EventsMaxAge == 0 {
		s.EventsMaxAge = 7 * 24 * time.Hour
	}
	if s.EventsMaxBytes == 0 {
		s.EventsMaxBytes = 1 << 30
	}
	if s.EventsMaxMsgs == 0 {
		s.EventsMaxMsgs = 1_000_000
	}
	if s.NodeTimeout == 0 {
		s.NodeTimeout = 30 * time.Second
	}
	return s
}

// Streams declares every stream. Each setting is explained where it is
// set; the README's table repeats them with their costs.
// BucketLocks is the key-value bucket of leases: one key per job that one
// process of a deployment should run at a time (the reconciler).
const BucketLocks = "WEFT_LOCKS"

// LocksBucket is the leases bucket. A lease is a key its holder rewrites
// every period; a holder that dies stops rewriting it, and the bucket
// forgets the key after ttl, so another process takes the lease.
func LocksBucket(s Settings, ttl time.Duration) jetstream.KeyValueConfig {
	s = s.withDefaults()
	storage := jetstream.FileStorage
	if s.Memory {
		storage = jetstream.MemoryStorage
	}
	return jetstream.KeyValueConfig{Bucket: BucketLocks, Description: "Weft leases", TTL: ttl,
		History: 1, Storage: storage, Replicas: s.Replicas}
}

func Streams(s Settings) []jetstream.StreamConfig {
	s = s.withDefaults()
	storage := jetstream.FileStorage
	if s.Memory {
		storage = jetstream.MemoryStorage
	}
	return []jetstream.StreamConfig{{
		Name:     StreamSubmit,
		Subjects: []string{SubjectSubmit},
		// Work queue: a submission is deleted once the starter acks it.
		Retention: jetstream.WorkQueuePolicy,
		Storage:   storage,
		Replicas:  s.Replicas,
		// Submissions are deduplicated by Nats-Msg-Id (the execution id) for
		// 10 seconds: twice what nats.go waits for a PubAck before a client
		// resends. Past it the store's idempotent create carries on for a
		// given executionId. Each id held costs the server about 120 bytes
		// for the whole window: at 3,000 submissions a second, 10 s is
		// 3.6 MB (two minutes was 20 MB and more).
		Duplicates: 10 * time.Second,
		MaxMsgSize: 1 << 20,
		// A full stream refuses new work rather than dropping accepted work.
		Discard: jetstream.DiscardNew,
		MaxMsgs: 1_000_000,
	}, {
		Name:      StreamTasks,
		Subjects:  []string{subjectTasks + ">"},
		Retention: jetstream.WorkQueuePolicy,
		Storage:   storage,
		Replicas:  s.Replicas,
		// Tasks are deduplicated for a few seconds only: two workers racing
		// to schedule the same successor publish within microseconds, and
		// each id held costs memory at the engine's rate. A later duplicate
		// finds its node recorded and does not run it again.
		Duplicates: 5 * time.Second,
		MaxMsgSize: 64 << 10,
		Discard:    jetstream.DiscardNew,
		MaxMsgs:    10_000_000,
	}, {
		Name:      StreamEvents,
		Subjects:  []string{subjectEvents + ">"},
		Retention: jetstream.LimitsPolicy,
		Storage:   storage,
		Replicas:  s.Replicas,
		// History for the projector's rebuild and late SSE readers; the
		// oldest events go first when a limit is reached.
		MaxAge:   s.EventsMaxAge,
		MaxBytes: s.EventsMaxBytes,
		MaxMsgs:  s.EventsMaxMsgs,
		Discard:  jetstream.DiscardOld,
		// A second: an end is stored once for good (see the engine's
		// once-messages), and the other events are published again only
		// by a step that failed after publishing, redelivered seconds to
		// a minute later, mostly past any window; the projector counts an
		// execution's events once whatever the history holds. Each id
		// held costs memory at the engine's rate: at 5 s the window held
		// five times as many, and the engine ran about 6% slower at full
		// load in alternating runs.
		Duplicates: time.Second,
		MaxMsgSize: 1 << 20,
	}, {
		Name:       StreamRejected,
		Subjects:   []string{subjectRejected + ">"},
		Retention:  jetstream.LimitsPolicy,
		Storage:    storage,
		Replicas:   s.Replicas,
		MaxAge:     7 * 24 * time.Hour,
		MaxBytes:   256 << 20,
		Discard:    jetstream.DiscardOld,
		Duplicates: time.Minute,
	}}
}

// StarterConsumer is the durable consumer of submissions.
func StarterConsumer(s Settings) jetstream.ConsumerConfig {
	s = s.withDefaults()
	return jetstream.ConsumerConfig{
		Durable:   ConsumerStarter,
		AckPolicy: jetstream.AckExplicitPolicy,
		// A start runs the pure nodes inline, each bounded by the node
		// timeout: a starter that has not acked by then is gone.
		AckWait: 2 * s.NodeTimeout,
		// A submission that cannot be started after this many tries is
		// refused and kept in WEFT_REJECTED, never redelivered forever.
		MaxDeliver:    10,
		MaxAckPending: 4096,
	}
}

// TaskConsumerConfig is the durable consumer of one node type's tasks,
// shared by every pool that runs the type.
func TaskConsumerConfig(nodeType string, s Settings) jetstream.ConsumerConfig {
	s = s.withDefaults()
	return jetstream.ConsumerConfig{
		Durable:       TaskConsumer(nodeType),
		FilterSubject: TaskSubject(nodeType),
		AckPolicy:     jetstream.AckExplicitPolicy,
		// Longer than a node may run between heartbeats: a long node calls
		// InProgress, so a task is redelivered only when its worker died.
		AckWait: 2 * s.NodeTimeout,
		// Retries by a node's policy are naks with delay and count here:
		// above the largest retry policy (10) plus crash redeliveries.
		MaxDeliver:    25,
		MaxAckPending: 4096,
	}
}

// ProjectorConsumer is the durable consumer that builds the dashboard
// counters from every event.
func ProjectorConsumer() jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       ConsumerProjector,
		AckPolicy:     jetstream.AckExplicitPolicy,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		// A batch is two Redis round trips (a few more when it meets
		// another projector's): a projector that has not acked in 2 s is
		// gone. It must stay well below the projector's DoneTTL (5 s).
		AckWait:       2 * time.Second,
		MaxDeliver:    -1,
		MaxAckPending: 8192,
	}
}
