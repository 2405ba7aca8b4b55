package workers_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/weftdev/weft/events"
	"github.com/weftdev/weft/events/natstest"
	"github.com/weftdev/weft/persistence"
	"github.com/weftdev/weft/persistence/sqlite"
	"github.com/weftdev/weft/workers"
	"github.com/weftdev/weft/workers/flow"
	"github.com/weftdev/weft/workers/nodes"
)

// runs counts TRANSFORM runs by execution and node; the runner wrapped in
// TestMain panics on the input text "poison".
var runs sync.Map // "exec:node" → *atomic.Int64

func TestMain(m *testing.M) {
	orig, _ := nodes.Lookup(flow.TypeTransform)
	restore := nodes.Replace(flow.TypeTransform, nodes.Spec{Pure: true, Runner: nodes.RunnerFunc(func(ctx context.Context, in nodes.Input) (any, error) {
		c, _ := runs.LoadOrStore(in.ExecutionID+":"+in.Node.ID, new(atomic.Int64))
		c.(*atomic.Int64).Add(1)
		if in.Scope.Input["text"] == "poison" {
			panic("poisoned input")
		}
		return orig.Runner.Run(ctx, in)
	})})
	code := m.Run()
	restore()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

var seq atomic.Int64

// uid is an execution id unique in this test binary, so run counts of
// repeated tests (-count) do not add up.
func uid(prefix string) string { return fmt.Sprintf("%s-%d-%d", prefix, os.Getpid(), seq.Add(1)) }

func runCount(exec, node string) int64 {
	c, ok := runs.Load(exec + ":" + node)
	if !ok {
		return 0
	}
	return c.(*atomic.Int64).Load()
}

type bundle struct {
	nc     *nats.Conn
	js     jetstream.JetStream
	store  *sqlite.Store
	loads  *atomic.Int64 // LoadExecution calls the engine made
	engine *workers.Engine
	userID string
	wf     *persistence.Workflow
	ends   chan events.Event
}

var diamond = `{"name":"diamond","nodes":[
 {"id":"in","type":"INPUT"},
 {"id":"a","type":"TRANSFORM","config":{"set":{"v":"input.text + 'a'"}}},
 {"id":"b","type":"TRANSFORM","config":{"set":{"v":"input.text + 'b'"}}},
 {"id":"c","type":"CONDITION","config":{"expression":"input.text == 'skip'"}},
 {"id":"d","type":"TRANSFORM","config":{"set":{"v":"'taken'"}}},
 {"id":"out","type":"OUTPUT","config":{"value":{"a":"{{ nodes.a.output.v }}","b":"{{ nodes.b.output.v }}","d":"{{ nodes.d.output?.v }}"}}}],
 "edges":[{"from":"in","to":"a"},{"from":"in","to":"b"},{"from":"in","to":"c"},{"from":"c","to":"d","branch":"true"},
 {"from":"a","to":"out"},{"from":"b","to":"out"},{"from":"d","to":"out"}]}`

func setup(t *testing.T, cfg workers.Config) *bundle {
	t.Helper()
	nc, js := natstest.Connect(t, natstest.Start(t))
	store, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "weft.db"))
	require.NoError(t, err)
	t.Cleanup(func() { _ = store.Close() })

	ctx := context.Background()
	u := &persistence.User{ID: "01user", Email: "u@example.com", Name: "U", PasswordHash: "x", CreatedAt: time.Now()}
	require.NoError(t, store.CreateUser(ctx, u))
	def, problems := flow.Parse([]byte(diamond))
	require.Empty(t, problems)
	raw, _ := json.Marshal(def)
	wf := &persistence.Workflow{ID: "01wf", UserID: u.ID, Name: def.Name, Definition: raw, CreatedAt: time.Now(), UpdatedAt: time.Now()}
	require.NoError(t, store.CreateWorkflow(ctx, wf))

	verify := func(_ context.Context, cred string) (string, error) {
		if cred == "good" {
			return u.ID, nil
		}
		return "", events.Errorf(events.CodeUnauthorized, "bad credential")
	}
	cfg.Settings.NodeTimeout = time.Second // tasks redelivered after 2 s
	loads := new(atomic.Int64)
	e, err := workers.New(cfg, nc, js, countingStore{store, loads}, verify)
	require.NoError(t, err)
	require.NoError(t, workers.EnsureStreams(ctx, js, cfg.Settings))
	b := &bundle{nc: nc, js: js, store: store, loads: loads, engine: e, userID: u.ID, wf: wf, ends: make(chan events.Event, 1024)}
	for _, kind := range []string{events.KindCompleted, events.KindFailed, events.KindCancelled} {
		sub, err := nc.Subscribe(events.EventKindFilter(kind), func(m *nats.Msg) {
			var ev events.Event
			_ = json.Unmarshal(m.Data, &ev)
			b.ends <- ev
		})
		require.NoError(t, err)
		t.Cleanup(func() { _ = sub.Unsubscribe() })
	}
	return b
}

// countingStore counts the engine's LoadExecution calls.
type countingStore struct {
	*sqlite.Store
	loads *atomic.Int64
}

func (c countingStore) LoadExecution(ctx context.Context, id string) (*persistence.Execution, error) {
	c.loads.Add(1)
	return c.Store.LoadExecution(ctx, id)
}

func (b *bundle) start(t *testing.T) {
	t.Helper()
	require.NoError(t, b.engine.Start(context.Background(), nodes.Types()))
	t.Cleanup(b.engine.Stop)
}

func (b *bundle) submit(t *testing.T, execID, text, msgID string) {
	t.Helper()
	m := nats.NewMsg(events.SubjectSubmit)
	m.Data, _ = json.Marshal(events.SubmitRequest{WorkflowID: b.wf.ID, ExecutionID: execID, Inputs: map[string]any{"text": text}})
	m.Header.Set(events.HeaderAPIKey, "good")
	if msgID != "" {
		m.Header.Set(events.HeaderMsgID, msgID)
	}
	_, err := b.js.PublishMsg(context.Background(), m)
	require.NoError(t, err)
}

func (b *bundle) waitEnd(t *testing.T, execID string) *persistence.Execution {
	t.Helper()
	var ex *persistence.Execution
	require.Eventually(t, func() bool {
		var err error
		ex, err = b.store.LoadExecution(context.Background(), execID)
		return err == nil && persistence.Terminal(ex.Status)
	}, 15*time.Second, 10*time.Millisecond)
	return ex
}

func TestDiamondRunsInBothModes(t *testing.T) {
	t.Parallel()
	for _, hop := range []bool{false, true} {
		t.Run(fmt.Sprintf("hop=%v", hop), func(t *testing.T) {
			t.Parallel()
			b := setup(t, workers.Config{HopPerNode: hop})
			b.start(t)
			id := uid(fmt.Sprintf("diamond-%v", hop))
			b.submit(t, id, "go", "")
			ex := b.waitEnd(t, id)
			require.Equal(t, persistence.StatusCompleted, ex.Status)
			require.JSONEq(t, `{"a":"goa","b":"gob","d":null}`, string(ex.Output))
			require.Equal(t, persistence.NodeSkipped, ex.Nodes["d"].Status)
			for _, id := range []string{"in", "a", "b", "c", "out"} {
				require.Equal(t, persistence.StatusCompleted, ex.Nodes[id].Status, id)
				require.Equal(t, 1, ex.Nodes[id].Attempts, id)
			}
			require.EqualValues(t, 1, runCount(id, "a"))
		})
	}
}

// TestRedeliveredSubmissionRunsOnce sends one submission three times (new
// message ids, so JetStream keeps each): one execution, each node run once,
// one end event.
func TestRedeliveredSubmissionRunsOnce(t *testing.T) {
	t.Parallel()
	b := setup(t, workers.Config{HopPerNode: true})
	b.start(t)
	id := uid("dup")
	for i := range 3 {
		b.submit(t, id, "go", fmt.Sprintf("%s-m%d", id, i))
	}
	ex := b.waitEnd(t, id)
	require.Equal(t, persistence.StatusCompleted, ex.Status)
	time.Sleep(500 * time.Millisecond) // let the duplicates be handled
	require.EqualValues(t, 1, runCount(id, "a"))
	require.EqualValues(t, 1, runCount(id, "b"))
	ends := 0
	for len(b.ends) > 0 {
		if ev := <-b.ends; ev.ExecutionID == id {
			ends++
		}
	}
	require.Equal(t, 1, ends)
}

// TestDuplicateTaskIsNotRunAgain publishes a task for a node whose result
// is recorded: it is acked without running.
func TestDuplicateTaskIsNotRunAgain(t *testing.T) {
	t.Parallel()
	b := setup(t, workers.Config{HopPerNode: true})
	b.start(t)
	id := uid("once")
	b.submit(t, id, "go", "")
	b.waitEnd(t, id)
	require.EqualValues(t, 1, runCount(id, "a"))
	m := nats.NewMsg(events.TaskSubject(flow.TypeTransform))
	m.Data, _ = json.Marshal(events.Task{ExecutionID: id, NodeID: "a"})
	m.Header.Set(events.HeaderMsgID, "late-duplicate")
	_, err := b.js.PublishMsg(context.Background(), m)
	require.NoError(t, err)
	stream, err := b.js.Stream(context.Background(), events.StreamTasks)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		info, err := stream.Info(context.Background())
		return err == nil && info.State.Msgs == 0
	}, 5*time.Second, 10*time.Millisecond)
	require.EqualValues(t, 1, runCount(id, "a"))
}

// TestRedeliveryAfterRecordBeforeAck plays a worker that died after
// recording a node but before acking: the redelivered task sees the record
// and only advances.
func TestRedeliveryAfterRecordBeforeAck(t *testing.T) {
	t.Parallel()
	b := setup(t, workers.Config{HopPerNode: true})
	ctx := context.Background()
	// Record the execution and the INPUT node's result by hand, as a
	// worker would have, and leave the task for "a" unacked in the stream.
	id := uid("crash")
	ex := &persistence.Execution{ID: id, UserID: b.userID, WorkflowID: b.wf.ID, WorkflowVersion: 1,
		Status: persistence.StatusRunning, Inputs: json.RawMessage(`{"text":"go"}`), CreatedAt: time.Now()}
	_, _, err := b.store.CreateExecution(ctx, ex)
	require.NoError(t, err)
	now := time.Now()
	_, err = b.store.ApplyExecution(ctx, persistence.ExecutionUpdate{ID: id, Nodes: map[string]*persistence.NodeState{
		"in": {Type: "INPUT", Status: persistence.StatusCompleted, Attempts: 1, StartedAt: &now, FinishedAt: &now, Output: json.RawMessage(`{"text":"go"}`)},
		"a":  {Type: "TRANSFORM", Status: persistence.StatusCompleted, Attempts: 1, StartedAt: &now, FinishedAt: &now, Output: json.RawMessage(`{"v":"recorded"}`)},
	}})
	require.NoError(t, err)
	for _, n := range []string{"a", "b", "c"} {
		m := nats.NewMsg(events.TaskSubject(flow.TypeTransform))
		if n == "c" {
			m.Subject = events.TaskSubject(flow.TypeCondition)
		}
		m.Data, _ = json.Marshal(events.Task{ExecutionID: id, NodeID: n})
		_, err := b.js.PublishMsg(ctx, m)
		require.NoError(t, err)
	}
	b.start(t)
	done := b.waitEnd(t, id)
	require.Equal(t, persistence.StatusCompleted, done.Status)
	require.EqualValues(t, 0, runCount(id, "a"), "a was recorded: not run again")
	require.JSONEq(t, `{"a":"recorded","b":"gob","d":null}`, string(done.Output))
}

// TestPoisonTaskFailsTheExecution: a node that panics every time is
// recovered, given up on, and the execution fails; the worker goes on.
func TestPoisonTaskFailsTheExecution(t *testing.T) {
	t.Parallel()
	b := setup(t, workers.Config{HopPerNode: true})
	b.start(t)
	poison, healthy := uid("poison"), uid("healthy")
	b.submit(t, poison, "poison", "")
	b.submit(t, healthy, "fine", "")
	require.Equal(t, persistence.StatusCompleted, b.waitEnd(t, healthy).Status)
	ex := b.waitEnd(t, poison)
	require.Equal(t, persistence.StatusFailed, ex.Status)
	require.NotNil(t, ex.Error)
	require.Equal(t, "panic", ex.Error.Code)
}

func TestUnauthorisedSubmissionIsRefused(t *testing.T) {
	t.Parallel()
	b := setup(t, workers.Config{})
	b.start(t)
	m := nats.NewMsg(events.SubjectSubmit)
	m.Data = []byte(`{"workflowId":"01wf","inputs":{},"executionId":"nope"}`)
	m.Header.Set(events.HeaderAPIKey, "bad")
	_, err := b.js.PublishMsg(context.Background(), m)
	require.NoError(t, err)
	rejected, err := b.js.Stream(context.Background(), events.StreamRejected)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		info, err := rejected.Info(context.Background())
		return err == nil && info.State.Msgs == 1
	}, 5*time.Second, 10*time.Millisecond)
	_, err = b.store.LoadExecution(context.Background(), "nope")
	require.True(t, events.IsNotFound(err))
}
