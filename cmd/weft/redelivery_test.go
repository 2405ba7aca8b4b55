package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/weftdev/weft/events"
	"github.com/weftdev/weft/events/natstest"
	"github.com/weftdev/weft/persistence"
	"github.com/weftdev/weft/persistence/sqlite"
	"github.com/weftdev/weft/workers"
	"github.com/weftdev/weft/workers/flow"
)

// The tests of this file kill a `weft worker` process while a
// side-effecting node of it waits on a remote server, and let another
// worker process take the redelivered task: the execution completes once,
// the node's result is recorded once, and the remote effect happens as
// often as the remote side allows (once, for a server that honours the
// Idempotency-Key).

// redeliveryNodeTimeout is the workers' --node-timeout: tasks are
// redelivered 2× this after their worker's last heartbeat.
const redeliveryNodeTimeout = 2 * time.Second

// cluster is a NATS server and a SQLite store shared by worker processes,
// as on one host; the test plays the ingress.
type cluster struct {
	bin, natsURL, dir string
	store             *sqlite.Store
	js                jetstream.JetStream
	userID            string
}

func newCluster(t *testing.T) *cluster {
	t.Helper()
	c := &cluster{bin: weftBinary(t), natsURL: startNATS(t), dir: t.TempDir(), userID: "01redeliveryuser"}
	ctx := context.Background()
	store, err := sqlite.Open(ctx, filepath.Join(c.dir, "weft.db"))
	require.NoError(t, err)
	t.Cleanup(func() { _ = store.Close() })
	c.store = store
	require.NoError(t, store.CreateUser(ctx, &persistence.User{ID: c.userID, Email: "redelivery@example.com", Name: "R", PasswordHash: "x", CreatedAt: time.Now()}))
	_, c.js = natstest.Connect(t, c.natsURL)
	require.NoError(t, workers.EnsureStreams(ctx, c.js, events.Settings{NodeTimeout: redeliveryNodeTimeout}))
	return c
}

// worker starts `weft worker` for the given node types; env is added to
// the test's environment.
func (c *cluster) worker(t *testing.T, types string, env ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(c.bin, "worker", "--nats", c.natsURL, "--data", c.dir, "--types", types,
		"--node-timeout", redeliveryNodeTimeout.String(), "--log-level", "error")
	cmd.Env = append(os.Environ(), "WEFT_REDIS_URL=", "WEFT_MONGO_URI=", "WEFT_JWT_SECRET=a secret of thirty-two characters or more",
		"WEFT_HTTP_ALLOW_PRIVATE=true")
	cmd.Env = append(cmd.Env, env...)
	cmd.Stderr = os.Stderr
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Signal(syscall.SIGTERM)
			_ = cmd.Wait()
		}
	})
	return cmd
}

// kill ends a worker with SIGKILL: no drain, no ack, no last write.
func kill(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	require.NoError(t, cmd.Process.Kill())
	_ = cmd.Wait()
}

// workflow stores a workflow given as JSON and returns its id.
func (c *cluster) workflow(t *testing.T, id, definition string) string {
	t.Helper()
	def, problems := flow.Parse([]byte(definition))
	require.Empty(t, problems)
	raw, err := json.Marshal(def)
	require.NoError(t, err)
	require.NoError(t, c.store.CreateWorkflow(context.Background(), &persistence.Workflow{ID: id, UserID: c.userID, Name: def.Name,
		Definition: raw, CreatedAt: time.Now(), UpdatedAt: time.Now()}))
	return id
}

// submit records an execution as the ingress does and hands it to the
// starters.
func (c *cluster) submit(t *testing.T, workflowID, id, inputs string) {
	t.Helper()
	ctx := context.Background()
	_, _, err := c.store.CreateExecution(ctx, &persistence.Execution{ID: id, UserID: c.userID, WorkflowID: workflowID, WorkflowVersion: 1,
		Status: persistence.StatusQueued, Inputs: json.RawMessage(inputs), CreatedAt: time.Now()})
	require.NoError(t, err)
	m := nats.NewMsg(events.SubjectSubmit)
	m.Data, _ = json.Marshal(events.SubmitRequest{WorkflowID: workflowID, ExecutionID: id})
	m.Header.Set(events.HeaderMsgID, id)
	_, err = c.js.PublishMsg(ctx, m)
	require.NoError(t, err)
}

func (c *cluster) waitEnd(t *testing.T, id string) *persistence.Execution {
	t.Helper()
	var ex *persistence.Execution
	require.Eventually(t, func() bool {
		var err error
		ex, err = c.store.LoadExecution(context.Background(), id)
		return err == nil && persistence.Terminal(ex.Status)
	}, 20*time.Second, 20*time.Millisecond)
	return ex
}

// requireOnce checks the execution's event history: one terminal event,
// completed, and one transition of node to completed.
func (c *cluster) requireOnce(t *testing.T, id, node string) {
	t.Helper()
	// The store records the end just before it is published.
	var evs []events.Event
	require.Eventually(t, func() bool {
		evs = executionEvents(t, c.js, id)
		return slices.ContainsFunc(evs, func(ev events.Event) bool { return persistence.Terminal(ev.Kind) })
	}, 5*time.Second, 10*time.Millisecond, "no end in the stream")
	ends, recorded := 0, 0
	for _, ev := range evs {
		switch ev.Kind {
		case events.KindCompleted, events.KindFailed, events.KindCancelled:
			require.Equal(t, events.KindCompleted, ev.Kind)
			ends++
		}
		for _, n := range ev.Nodes {
			if n.ID == node && n.Status == persistence.StatusCompleted {
				recorded++
			}
		}
	}
	require.Equal(t, 1, ends, "the execution is announced complete once")
	require.Equal(t, 1, recorded, "the node's result is announced once")
}

// executionEvents reads every event of one execution from WEFT_EVENTS.
func executionEvents(t *testing.T, js jetstream.JetStream, id string) []events.Event {
	t.Helper()
	ctx := context.Background()
	cons, err := js.OrderedConsumer(ctx, events.StreamEvents, jetstream.OrderedConsumerConfig{FilterSubjects: []string{events.EventFilter(id)}})
	require.NoError(t, err)
	info, err := cons.Info(ctx)
	require.NoError(t, err)
	var out []events.Event
	if info.NumPending == 0 {
		return out
	}
	batch, err := cons.Fetch(int(info.NumPending), jetstream.FetchMaxWait(5*time.Second))
	require.NoError(t, err)
	for m := range batch.Messages() {
		var ev events.Event
		require.NoError(t, json.Unmarshal(m.Data(), &ev))
		out = append(out, ev)
	}
	require.NoError(t, batch.Error())
	require.Len(t, out, int(info.NumPending))
	return out
}

// idempotentAPI is a remote API that honours Idempotency-Key as payment
// APIs do: the first request with a key applies its effect (a charge) and
// keeps its answer; a later request with that key gets the kept answer,
// marked replayed, and applies nothing.
type idempotentAPI struct {
	mu       sync.Mutex
	keys     []string          // Idempotency-Key of every request, in order
	answers  map[string][]byte // kept answer by key
	charges  int               // effects applied
	arrived  chan struct{}     // closed when the first request has been applied
	hold     chan struct{}     // the first request's answer waits for this, or its client's death
	holdOnce sync.Once
}

func newIdempotentAPI(t *testing.T) (*idempotentAPI, *httptest.Server) {
	t.Helper()
	api := &idempotentAPI{answers: map[string][]byte{}, arrived: make(chan struct{}), hold: make(chan struct{})}
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)
	t.Cleanup(func() { api.holdOnce.Do(func() { close(api.hold) }) }) // before srv.Close: nothing stays held
	return api, srv
}

func (a *idempotentAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	key := r.Header.Get("Idempotency-Key")
	body, _ := io.ReadAll(r.Body)
	a.mu.Lock()
	a.keys = append(a.keys, key)
	if key == "" {
		a.mu.Unlock()
		http.Error(w, `{"error":"Idempotency-Key required"}`, http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	if kept, ok := a.answers[key]; ok {
		a.mu.Unlock()
		w.Header().Set("Idempotent-Replayed", "true")
		_, _ = w.Write(kept)
		return
	}
	var req struct {
		Amount float64 `json:"amount"`
	}
	_ = json.Unmarshal(body, &req)
	a.charges++
	answer, _ := json.Marshal(map[string]any{"id": fmt.Sprintf("ch_%d", a.charges), "amount": req.Amount})
	a.answers[key] = answer
	first := a.charges == 1
	a.mu.Unlock()
	if first {
		// Applied; the answer is held until the worker that asked is dead,
		// so it never learns the result.
		close(a.arrived)
		select {
		case <-a.hold:
		case <-r.Context().Done():
		}
	}
	_, _ = w.Write(answer)
}

func (a *idempotentAPI) seen() (keys []string, charges int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.keys...), a.charges
}

// TestHTTPRequestRedeliveredAfterWorkerKilled kills the worker whose
// HTTP_REQUEST is waiting on a charge that the remote API has applied.
// Another worker takes the task after AckWait and sends it again with the
// same Idempotency-Key; the API answers with the first charge instead of
// charging twice, and the execution completes once with that charge.
func TestHTTPRequestRedeliveredAfterWorkerKilled(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs worker processes")
	}
	t.Parallel()
	api, srv := newIdempotentAPI(t)
	c := newCluster(t)
	wf := c.workflow(t, "01chargewf", `{"name":"charge","nodes":[
 {"id":"in","type":"INPUT"},
 {"id":"call","type":"HTTP_REQUEST","config":{"method":"POST","url":"`+srv.URL+`/charges","body":{"amount":"{{ input.amount }}"}}},
 {"id":"out","type":"OUTPUT","config":{"value":"{{ nodes.call.output.body }}"}}],
 "edges":[{"from":"in","to":"call"},{"from":"call","to":"out"}]}`)

	first := c.worker(t, "HTTP_REQUEST")
	const id = "charge-1"
	c.submit(t, wf, id, `{"amount":42}`)
	select {
	case <-api.arrived:
	case <-time.After(20 * time.Second):
		t.Fatal("the charge never reached the API")
	}
	kill(t, first)
	ex, err := c.store.LoadExecution(context.Background(), id)
	require.NoError(t, err)
	require.Equal(t, persistence.StatusRunning, ex.Nodes["call"].Status, "killed while the request was in flight")
	keys, charges := api.seen()
	require.Len(t, keys, 1)
	require.Equal(t, 1, charges)

	c.worker(t, "HTTP_REQUEST")
	ex = c.waitEnd(t, id)
	require.Equal(t, persistence.StatusCompleted, ex.Status, "%+v", ex.Error)
	require.JSONEq(t, `{"id":"ch_1","amount":42}`, string(ex.Output), "the first charge's answer")
	call := ex.Nodes["call"]
	require.Equal(t, persistence.StatusCompleted, call.Status)
	require.Equal(t, 2, call.Attempts, "the first delivery and the redelivery")
	var out struct {
		Headers map[string]any `json:"headers"`
	}
	require.NoError(t, json.Unmarshal(call.Output, &out))
	require.Equal(t, "true", out.Headers["idempotent-replayed"], "the recorded answer is the API's replay")

	keys, charges = api.seen()
	require.Equal(t, []string{id + ":call", id + ":call"}, keys, "the same key on both deliveries")
	require.Equal(t, 1, charges, "charged once")
	c.requireOnce(t, id, "call")
}

// TestAIProcessorRedeliveredAfterWorkerKilled kills the worker whose
// AI_PROCESSOR is waiting on the provider. An AI call is not idempotent
// upstream: providers take no idempotency key, so the worker that takes
// the redelivered task calls the provider again (when the node sets
// cache: true and the router has Redis, the router's per-node cache can
// answer the second call instead). What Weft guarantees is that the
// execution completes once, with one recorded result.
func TestAIProcessorRedeliveredAfterWorkerKilled(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs worker processes")
	}
	t.Parallel()
	answer, answered := fakeChat(t, []string{"Hel", "lo", " Ann"}, false, nil)
	var (
		calls   atomic.Int64
		arrived = make(chan struct{})
		hold    = make(chan struct{})
	)
	provider := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) == 1 {
			// The first call is held until its worker is dead.
			close(arrived)
			select {
			case <-hold:
			case <-r.Context().Done():
			}
			return
		}
		answer.Config.Handler.ServeHTTP(w, r)
	}))
	t.Cleanup(provider.Close)
	t.Cleanup(func() { close(hold) })

	c := newCluster(t)
	wf := c.workflow(t, "01askwf", `{"name":"ask","nodes":[
 {"id":"in","type":"INPUT"},
 {"id":"ask","type":"AI_PROCESSOR","config":{"taskType":"quick_decision","prompt":"Say hello to {{ input.name }}"}},
 {"id":"out","type":"OUTPUT","config":{"value":"{{ nodes.ask.output.text }}"}}],
 "edges":[{"from":"in","to":"ask"},{"from":"ask","to":"out"}]}`)
	// quick_decision's primary is groq; no other provider is configured.
	env := []string{"GROQ_API_KEY=test-key", "WEFT_GROQ_BASE_URL=" + provider.URL, "GEMINI_API_KEY=", "HF_TOKEN=", "OPENROUTER_API_KEY="}

	first := c.worker(t, "AI_PROCESSOR", env...)
	const id = "ask-1"
	c.submit(t, wf, id, `{"name":"Ann"}`)
	select {
	case <-arrived:
	case <-time.After(20 * time.Second):
		t.Fatal("the AI call never reached the provider")
	}
	kill(t, first)

	c.worker(t, "AI_PROCESSOR", env...)
	ex := c.waitEnd(t, id)
	require.Equal(t, persistence.StatusCompleted, ex.Status, "%+v", ex.Error)
	require.JSONEq(t, `"Hello Ann"`, string(ex.Output))
	ask := ex.Nodes["ask"]
	require.Equal(t, persistence.StatusCompleted, ask.Status)
	require.Equal(t, 2, ask.Attempts)
	require.EqualValues(t, 2, calls.Load(), "the dead worker's call and the redelivery's")
	require.EqualValues(t, 1, answered.Load())
	c.requireOnce(t, id, "ask")
}
