package workers_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/weftdev/weft/events"
	"github.com/weftdev/weft/events/natstest"
	"github.com/weftdev/weft/persistence"
	"github.com/weftdev/weft/persistence/sqlite"
	"github.com/weftdev/weft/providers"
	"github.com/weftdev/weft/workers"
	"github.com/weftdev/weft/workers/flow"
	"github.com/weftdev/weft/workers/nodes"
)

// The tests of this file stop a worker at a chosen point of a
// side-effecting node, as a crash would, and let another worker take the
// redelivered task. A worker here is an engine with its own NATS
// connection and its own handle on the shared store; killing it closes the
// connection (so nothing it has not acked is acked, and JetStream
// redelivers after AckWait) and makes its store handle fail (so it writes
// nothing more).

// errDead is what a killed worker's store handle answers.
var errDead = errors.New("this worker is dead")

// mortalStore is one worker's handle on the shared store. After runs after
// a write reached the store: a test kills the worker there, so the write
// is durable and nothing after it happens.
type mortalStore struct {
	*sqlite.Store
	dead atomic.Bool

	afterApply func(persistence.ExecutionUpdate)
	afterData  func(persistence.DataRequest, *persistence.DataResult)
}

func (s *mortalStore) LoadExecution(ctx context.Context, id string) (*persistence.Execution, error) {
	if s.dead.Load() {
		return nil, errDead
	}
	return s.Store.LoadExecution(ctx, id)
}

func (s *mortalStore) CreateExecution(ctx context.Context, e *persistence.Execution) (*persistence.Execution, bool, error) {
	if s.dead.Load() {
		return nil, false, errDead
	}
	return s.Store.CreateExecution(ctx, e)
}

func (s *mortalStore) ApplyExecution(ctx context.Context, u persistence.ExecutionUpdate) (persistence.ApplyResult, error) {
	if s.dead.Load() {
		return persistence.ApplyResult{}, errDead
	}
	res, err := s.Store.ApplyExecution(ctx, u)
	if err == nil && s.afterApply != nil {
		s.afterApply(u)
	}
	if s.dead.Load() {
		return persistence.ApplyResult{}, errDead
	}
	return res, err
}

func (s *mortalStore) Data(ctx context.Context, req persistence.DataRequest) (*persistence.DataResult, error) {
	if s.dead.Load() {
		return nil, errDead
	}
	res, err := s.Store.Data(ctx, req)
	if err == nil && s.afterData != nil {
		s.afterData(req, res)
	}
	if s.dead.Load() {
		return nil, errDead
	}
	return res, err
}

// worker is one engine of the test, as if in a process of its own.
type worker struct {
	nc     *nats.Conn
	store  *mortalStore
	engine *workers.Engine
	died   chan struct{}
	once   sync.Once
}

// newWorker builds a worker on the bundle's NATS server and store with the
// given runners; runners may use the worker's store handle, given to it.
// Start makes it work.
func (b *bundle) newWorker(t *testing.T, hop bool, runners func(*mortalStore) map[string]nodes.Runner) *worker {
	t.Helper()
	nc, js := natstest.Connect(t, b.nc.ConnectedUrl())
	w := &worker{nc: nc, store: &mortalStore{Store: b.store}, died: make(chan struct{})}
	noCredentials := func(context.Context, string) (string, error) {
		return "", events.Errorf(events.CodeUnauthorized, "no credentials in these tests")
	}
	cfg := workers.Config{HopPerNode: hop, Concurrency: 4, Settings: events.Settings{NodeTimeout: time.Second}} // AckWait 2 s
	if runners != nil {
		cfg.Runners = runners(w.store)
	}
	var err error
	w.engine, err = workers.New(cfg, nc, js, w.store, noCredentials)
	require.NoError(t, err)
	return w
}

func (w *worker) start(t *testing.T) {
	t.Helper()
	require.NoError(t, w.engine.Start(context.Background(), nodes.Types()))
	t.Cleanup(w.engine.Stop)
}

// kill stops the worker dead: its store handle fails from now on and its
// connection closes, so it acks, naks and publishes nothing more.
func (w *worker) kill() {
	w.once.Do(func() {
		w.store.dead.Store(true)
		w.nc.Close()
		close(w.died)
	})
}

func (w *worker) awaitDeath(t *testing.T) {
	t.Helper()
	select {
	case <-w.died:
	case <-time.After(15 * time.Second):
		t.Fatal("the worker never reached the point it was to die at")
	}
}

// addWorkflow stores a workflow for the bundle's user.
func (b *bundle) addWorkflow(t *testing.T, id, definition string) {
	t.Helper()
	def, problems := flow.Parse([]byte(definition))
	require.Empty(t, problems)
	raw, err := json.Marshal(def)
	require.NoError(t, err)
	require.NoError(t, b.store.CreateWorkflow(context.Background(), &persistence.Workflow{ID: id, UserID: b.userID, Name: def.Name,
		Definition: raw, CreatedAt: time.Now(), UpdatedAt: time.Now()}))
}

// submitRecorded records an execution as the ingress does and submits it
// without a credential, as the ingress hands it on.
func (b *bundle) submitRecorded(t *testing.T, workflowID, id, inputs string) {
	t.Helper()
	ctx := context.Background()
	_, _, err := b.store.CreateExecution(ctx, &persistence.Execution{ID: id, UserID: b.userID, WorkflowID: workflowID, WorkflowVersion: 1,
		Status: persistence.StatusQueued, Inputs: json.RawMessage(inputs), CreatedAt: time.Now()})
	require.NoError(t, err)
	m := nats.NewMsg(events.SubjectSubmit)
	m.Data, _ = json.Marshal(events.SubmitRequest{WorkflowID: workflowID, ExecutionID: id})
	m.Header.Set(events.HeaderMsgID, id)
	_, err = b.js.PublishMsg(ctx, m)
	require.NoError(t, err)
}

// history counts an execution's terminal events by kind, and the events
// that report node completed, once its end is in the stream: the store
// records it just before it is published.
func (b *bundle) history(t *testing.T, id, node string) (ends map[string]int, nodeCompleted int) {
	t.Helper()
	require.Eventually(t, func() bool {
		ends, nodeCompleted = b.readHistory(t, id, node)
		return len(ends) > 0
	}, 5*time.Second, 10*time.Millisecond, "no end in the stream")
	return ends, nodeCompleted
}

func (b *bundle) readHistory(t *testing.T, id, node string) (ends map[string]int, nodeCompleted int) {
	t.Helper()
	ctx := context.Background()
	cons, err := b.js.OrderedConsumer(ctx, events.StreamEvents, jetstream.OrderedConsumerConfig{FilterSubjects: []string{events.EventFilter(id)}})
	require.NoError(t, err)
	info, err := cons.Info(ctx)
	require.NoError(t, err)
	ends = map[string]int{}
	if info.NumPending == 0 {
		return ends, 0
	}
	batch, err := cons.Fetch(int(info.NumPending), jetstream.FetchMaxWait(5*time.Second))
	require.NoError(t, err)
	got := 0
	for m := range batch.Messages() {
		got++
		var ev events.Event
		require.NoError(t, json.Unmarshal(m.Data(), &ev))
		if persistence.Terminal(ev.Kind) {
			ends[ev.Kind]++
		}
		for _, n := range ev.Nodes {
			if n.ID == node && n.Status == persistence.StatusCompleted {
				nodeCompleted++
			}
		}
	}
	require.NoError(t, batch.Error())
	require.EqualValues(t, info.NumPending, got)
	return ends, nodeCompleted
}

// chatProvider is an OpenAI-compatible chat completions server that
// answers every call with reply and counts the calls.
func chatProvider(t *testing.T, reply string) (*providers.Router, *atomic.Int64) {
	t.Helper()
	var calls atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		var req struct {
			Stream bool `json:"stream"`
		}
		if r.URL.Path != "/chat/completions" || json.NewDecoder(r.Body).Decode(&req) != nil || req.Stream {
			http.Error(w, `{"error":{"message":"this fake answers unstreamed chat completions only"}}`, http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"id":"c1","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":%q},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":3,"total_tokens":8}}`, reply)
	}))
	t.Cleanup(srv.Close)
	cfg := providers.DefaultConfig()
	p := cfg.Providers[providers.Groq]
	p.APIKey, p.BaseURL = "test-key", srv.URL
	cfg.Providers[providers.Groq] = p
	router, err := providers.New(cfg, providers.Options{})
	require.NoError(t, err)
	t.Cleanup(router.Close)
	return router, &calls
}

const askWorkflow = `{"name":"ask","nodes":[
 {"id":"in","type":"INPUT"},
 {"id":"ask","type":"AI_PROCESSOR","config":{"taskType":"quick_decision","prompt":"Say hello to {{ input.name }}"}},
 {"id":"out","type":"OUTPUT","config":{"value":"{{ nodes.ask.output.text }}"}}],
 "edges":[{"from":"in","to":"ask"},{"from":"ask","to":"out"}]}`

// TestAIRedeliveryAfterRecordDoesNotCallProvider kills the worker of an
// AI_PROCESSOR task right after its result reached the store, before it
// published anything or acked. The worker that takes the redelivered task
// finds the result recorded and does not call the provider again: the
// execution completes once, with the recorded answer. Inline, the record
// finished the execution and the redelivery only announces the end; with
// a hop per node, the redelivery schedules the OUTPUT node that the dead
// worker never sent.
func TestAIRedeliveryAfterRecordDoesNotCallProvider(t *testing.T) {
	t.Parallel()
	for _, hop := range []bool{false, true} {
		t.Run(fmt.Sprintf("hop=%v", hop), func(t *testing.T) {
			t.Parallel()
			b := setup(t, workers.Config{})
			b.addWorkflow(t, "01askwf", askWorkflow)
			router, calls := chatProvider(t, "Hello Ann")
			aiRunners := func(*mortalStore) map[string]nodes.Runner {
				return map[string]nodes.Runner{flow.TypeAIProcessor: nodes.NewAI(nodes.AIConfig{Router: router}).Runner}
			}

			first := b.newWorker(t, hop, aiRunners)
			first.store.afterApply = func(u persistence.ExecutionUpdate) {
				if n := u.Nodes["ask"]; n != nil && n.Status == persistence.StatusCompleted {
					first.kill()
				}
			}
			first.start(t)
			id := uid("ai-recorded")
			b.submitRecorded(t, "01askwf", id, `{"name":"Ann"}`)
			first.awaitDeath(t)

			recorded, err := b.store.LoadExecution(context.Background(), id)
			require.NoError(t, err)
			require.Equal(t, persistence.StatusCompleted, recorded.Nodes["ask"].Status, "the result is recorded")
			require.EqualValues(t, 1, calls.Load())

			b.newWorker(t, hop, aiRunners).start(t)
			ex := b.waitEnd(t, id)
			require.Equal(t, persistence.StatusCompleted, ex.Status, "%+v", ex.Error)
			require.JSONEq(t, `"Hello Ann"`, string(ex.Output))
			ask := ex.Nodes["ask"]
			require.Equal(t, 1, ask.Attempts, "the dead worker's record stands")
			require.JSONEq(t, string(recorded.Nodes["ask"].Output), string(ask.Output))
			require.EqualValues(t, 1, calls.Load(), "the provider is not called again")

			// Wait for the redelivered task to be acked, then look again.
			require.Eventually(t, func() bool {
				info, err := b.js.Consumer(context.Background(), events.StreamTasks, events.TaskConsumer(flow.TypeAIProcessor))
				if err != nil {
					return false
				}
				ci, err := info.Info(context.Background())
				return err == nil && ci.NumAckPending == 0 && ci.NumPending == 0
			}, 10*time.Second, 20*time.Millisecond)
			require.EqualValues(t, 1, calls.Load())
			ends, askCompleted := b.history(t, id, "ask")
			require.Equal(t, map[string]int{events.KindCompleted: 1}, ends, "announced complete once")
			// The dead worker recorded ask and died before announcing it;
			// the redelivery announces it, once.
			require.Equal(t, 1, askCompleted, "the recorded transition is announced")
		})
	}
}

// TestDatabaseInsertRedeliveredAfterApply kills the worker of a DATABASE
// insertOne right after the store applied the insert, before the node's
// result was recorded or the task acked. The redelivery runs the node
// again with the same idempotency key: the store answers with the first
// insert's result, and the collection holds one document.
func TestDatabaseInsertRedeliveredAfterApply(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, document string
	}{
		{"generated id", `{"total":"{{ input.total }}"}`},
		{"given id", `{"_id":"{{ input.id }}","total":"{{ input.total }}"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, workers.Config{})
			b.addWorkflow(t, "01savewf", `{"name":"save","nodes":[
 {"id":"in","type":"INPUT"},
 {"id":"save","type":"DATABASE","config":{"operation":"insertOne","collection":"orders","document":`+tc.document+`}},
 {"id":"out","type":"OUTPUT","config":{"value":"{{ nodes.save.output.insertedIds }}"}}],
 "edges":[{"from":"in","to":"save"},{"from":"save","to":"out"}]}`)
			dbRunners := func(s *mortalStore) map[string]nodes.Runner {
				return map[string]nodes.Runner{flow.TypeDatabase: nodes.NewDatabase(nodes.DatabaseConfig{Store: s}).Runner}
			}

			var applied []string
			first := b.newWorker(t, false, dbRunners)
			first.store.afterData = func(req persistence.DataRequest, res *persistence.DataResult) {
				if req.Operation == persistence.OpInsertOne {
					applied = res.InsertedIDs
					first.kill()
				}
			}
			first.start(t)
			id := uid("db-applied")
			b.submitRecorded(t, "01savewf", id, `{"id":"order-1","total":12}`)
			first.awaitDeath(t)

			ctx := context.Background()
			orders := func() []map[string]any {
				res, err := b.store.Data(ctx, persistence.DataRequest{UserID: b.userID, Collection: "orders", Operation: persistence.OpFind})
				require.NoError(t, err)
				return res.Documents
			}
			require.Len(t, applied, 1)
			require.Len(t, orders(), 1, "the insert is applied")
			ex, err := b.store.LoadExecution(ctx, id)
			require.NoError(t, err)
			require.Equal(t, persistence.StatusRunning, ex.Nodes["save"].Status, "its result is not recorded")

			b.newWorker(t, false, dbRunners).start(t)
			ex = b.waitEnd(t, id)
			require.Equal(t, persistence.StatusCompleted, ex.Status, "%+v", ex.Error)
			save := ex.Nodes["save"]
			require.Equal(t, 2, save.Attempts, "run by the dead worker and again by the redelivery")
			out, _ := json.Marshal(applied)
			require.JSONEq(t, string(out), string(ex.Output), "the redelivery reports the first insert's ids")
			docs := orders()
			require.Len(t, docs, 1, "one document, whatever the redeliveries")
			require.Equal(t, applied[0], docs[0]["_id"])
			require.EqualValues(t, 12, docs[0]["total"])

			ends, saveCompleted := b.history(t, id, "save")
			require.Equal(t, map[string]int{events.KindCompleted: 1}, ends, "announced complete once")
			require.Equal(t, 1, saveCompleted, "the node's result is announced once")
		})
	}
}
