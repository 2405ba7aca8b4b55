package storetest

import (
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/weftdev/weft/events"
	"github.com/weftdev/weft/persistence"
)

// executionCases are the cases of the Executions interface; Run runs them
// with the others.
var executionCases = []struct {
	name string
	fn   func(t *testing.T, b *bundle)
}{
	{"ExecutionsCreate", testExecutionsCreate},
	{"ExecutionsCreateIdempotencyKey", testExecutionsCreateIdempotencyKey},
	{"ExecutionsConcurrentCreate", testExecutionsConcurrentCreate},
	{"ExecutionsOtherUser", testExecutionsOtherUser},
	{"ExecutionsList", testExecutionsList},
	{"ExecutionsApply", testExecutionsApply},
	{"ExecutionsApplyNodes", testExecutionsApplyNodes},
	{"ExecutionsConcurrentNodes", testExecutionsConcurrentNodes},
	{"ExecutionsConcurrentFinish", testExecutionsConcurrentFinish},
	{"ExecutionsLogs", testExecutionsLogs},
	{"ExecutionsUnfinished", testExecutionsUnfinished},
	{"ExecutionsNotFound", testExecutionsNotFound},
	{"ExecutionsInvalid", testExecutionsInvalid},
}

// newExecution builds a queued execution of a (made-up) workflow.
func newExecution(owner *persistence.User, workflowID, key string) *persistence.Execution {
	return &persistence.Execution{
		ID: newID(), UserID: owner.ID, WorkflowID: workflowID, WorkflowVersion: 3,
		Status: persistence.StatusQueued, Inputs: json.RawMessage(`{"n": 1, "s":"x"}`),
		IdempotencyKey: key, CreatedAt: when,
	}
}

func (b *bundle) execution(t *testing.T, e *persistence.Execution) *persistence.Execution {
	t.Helper()
	stored, created, err := b.store.CreateExecution(b.ctx, e)
	require.NoError(t, err)
	require.True(t, created)
	require.Equal(t, e.ID, stored.ID)
	return stored
}

func (b *bundle) apply(t *testing.T, u persistence.ExecutionUpdate) persistence.ApplyResult {
	t.Helper()
	res, err := b.store.ApplyExecution(b.ctx, u)
	require.NoError(t, err)
	return res
}

func (b *bundle) finish(t *testing.T, id, status string) {
	t.Helper()
	res := b.apply(t, persistence.ExecutionUpdate{ID: id, Finish: &persistence.Finish{Status: status, At: when.Add(time.Minute)}})
	require.True(t, res.Finished)
}

func ptr[T any](v T) *T { return &v }

func testExecutionsCreate(t *testing.T, b *bundle) {
	e := newExecution(b.ann, "01JWF", "")
	stored := b.execution(t, e)
	require.Equal(t, persistence.StatusQueued, stored.Status)

	got, err := b.store.GetExecution(b.ctx, b.ann.ID, e.ID)
	require.NoError(t, err)
	requireTime(t, when, got.CreatedAt)
	require.Equal(t, e.ID, got.ID)
	require.Equal(t, b.ann.ID, got.UserID)
	require.Equal(t, "01JWF", got.WorkflowID)
	require.Equal(t, 3, got.WorkflowVersion)
	require.Equal(t, persistence.StatusQueued, got.Status)
	require.Equal(t, `{"n": 1, "s":"x"}`, string(got.Inputs), "inputs kept byte for byte")
	require.Nil(t, got.Output)
	require.Nil(t, got.Error)
	require.Nil(t, got.StartedAt)
	require.Nil(t, got.FinishedAt)
	require.Empty(t, got.IdempotencyKey)
	require.Empty(t, got.Nodes)

	loaded, err := b.store.LoadExecution(b.ctx, e.ID)
	require.NoError(t, err)
	require.Equal(t, got, loaded)

	// The same id again, whatever else it says, is the stored execution.
	again := newExecution(b.ann, "01JOTHER", "")
	again.ID = e.ID
	again.Inputs = json.RawMessage(`{"n":2}`)
	stored, created, err := b.store.CreateExecution(b.ctx, again)
	require.NoError(t, err)
	require.False(t, created)
	require.Equal(t, "01JWF", stored.WorkflowID)
	require.Equal(t, `{"n": 1, "s":"x"}`, string(stored.Inputs))

	// A running execution comes back as it stands, nodes included.
	b.apply(t, persistence.ExecutionUpdate{ID: e.ID, Start: ptr(when), Nodes: map[string]*persistence.NodeState{
		"a": {Type: "input", Status: persistence.StatusCompleted, Attempts: 1, Output: json.RawMessage(`1`)},
	}})
	stored, created, err = b.store.CreateExecution(b.ctx, again)
	require.NoError(t, err)
	require.False(t, created)
	require.Equal(t, persistence.StatusRunning, stored.Status)
	require.Len(t, stored.Nodes, 1)
	require.Equal(t, persistence.StatusCompleted, stored.Nodes["a"].Status)

	// Executions without a key do not collide with each other.
	b.execution(t, newExecution(b.ann, "01JWF", ""))
}

func testExecutionsCreateIdempotencyKey(t *testing.T, b *bundle) {
	first := b.execution(t, newExecution(b.ann, "01JWF", "order-42"))

	retry := newExecution(b.ann, "01JWF", "order-42")
	stored, created, err := b.store.CreateExecution(b.ctx, retry)
	require.NoError(t, err)
	require.False(t, created)
	require.Equal(t, first.ID, stored.ID, "the key finds the first execution")
	require.Equal(t, "order-42", stored.IdempotencyKey)
	_, err = b.store.GetExecution(b.ctx, b.ann.ID, retry.ID)
	requireCode(t, events.CodeNotFound, err)

	// Keys are per user.
	b.execution(t, newExecution(b.bob, "01JWF", "order-42"))
	got, err := b.store.GetExecution(b.ctx, b.ann.ID, first.ID)
	require.NoError(t, err)
	require.Equal(t, "order-42", got.IdempotencyKey)
}

// testExecutionsConcurrentCreate races creates with one idempotency key,
// and then with one id: each time exactly one creates, and every caller
// gets that one back.
func testExecutionsConcurrentCreate(t *testing.T, b *bundle) {
	const n = 5
	race := func(make func(i int) *persistence.Execution) {
		t.Helper()
		var (
			wg      sync.WaitGroup
			ids     [n]string
			created [n]bool
		)
		for i := range n {
			wg.Go(func() {
				stored, c, err := b.store.CreateExecution(b.ctx, make(i))
				if err != nil {
					t.Errorf("create %d: %v", i, err)
					return
				}
				ids[i], created[i] = stored.ID, c
			})
		}
		wg.Wait()
		if t.Failed() {
			t.FailNow()
		}
		winners := 0
		for i := range n {
			require.Equal(t, ids[0], ids[i], "every caller gets the stored execution")
			if created[i] {
				winners++
			}
		}
		require.Equal(t, 1, winners, "exactly one create stored it")
	}
	race(func(int) *persistence.Execution { return newExecution(b.ann, "01JWF", "same-key") })
	id := newID()
	race(func(int) *persistence.Execution {
		e := newExecution(b.ann, "01JWF", "")
		e.ID = id
		return e
	})
	list, _, err := b.store.ListExecutions(b.ctx, b.ann.ID, persistence.ExecutionFilter{}, persistence.Page{})
	require.NoError(t, err)
	require.Len(t, list, 2)
}

func testExecutionsOtherUser(t *testing.T, b *bundle) {
	e := b.execution(t, newExecution(b.ann, "01JWF", "k"))
	b.apply(t, persistence.ExecutionUpdate{ID: e.ID, Logs: []persistence.NodeLog{{NodeID: "a", At: when, Level: "info", Message: "secret"}}})

	_, err := b.store.GetExecution(b.ctx, b.bob.ID, e.ID)
	requireCode(t, events.CodeNotFound, err)
	_, err = b.store.ExecutionLogs(b.ctx, b.bob.ID, e.ID, 10)
	requireCode(t, events.CodeNotFound, err)
	list, next, err := b.store.ListExecutions(b.ctx, b.bob.ID, persistence.ExecutionFilter{}, persistence.Page{})
	require.NoError(t, err)
	require.Empty(t, list)
	require.Empty(t, next)

	// Bob cannot claim Ann's id, nor learn what it holds.
	dup := newExecution(b.bob, "01JWF", "k")
	dup.ID = e.ID
	stored, _, err := b.store.CreateExecution(b.ctx, dup)
	requireCode(t, events.CodeConflict, err)
	require.Nil(t, stored)
	got, err := b.store.GetExecution(b.ctx, b.ann.ID, e.ID)
	require.NoError(t, err)
	require.Equal(t, b.ann.ID, got.UserID)
}

func testExecutionsList(t *testing.T, b *bundle) {
	const wfA, wfB = "01JWFA", "01JWFB"
	var ids []string // oldest first
	for i := range 5 {
		wf := wfA
		if i%2 == 1 {
			wf = wfB
		}
		ids = append(ids, b.execution(t, newExecution(b.ann, wf, "")).ID)
	}
	b.execution(t, newExecution(b.bob, wfA, ""))
	// ids[0] completed, ids[1] failed, ids[2] running, ids[3] and ids[4] queued.
	b.apply(t, persistence.ExecutionUpdate{ID: ids[0], Start: ptr(when), Nodes: map[string]*persistence.NodeState{
		"a": {Type: "input", Status: persistence.StatusCompleted, Attempts: 1},
	}})
	b.finish(t, ids[0], persistence.StatusCompleted)
	b.finish(t, ids[1], persistence.StatusFailed)
	b.apply(t, persistence.ExecutionUpdate{ID: ids[2], Start: ptr(when)})

	list := func(f persistence.ExecutionFilter) []string {
		t.Helper()
		var (
			seen   []string
			cursor string
		)
		for pages := 1; ; pages++ {
			require.Less(t, pages, 10, "pagination does not end")
			page, next, err := b.store.ListExecutions(b.ctx, b.ann.ID, f, persistence.Page{Limit: 2, Cursor: cursor})
			require.NoError(t, err)
			require.LessOrEqual(t, len(page), 2)
			for _, e := range page {
				require.Equal(t, b.ann.ID, e.UserID)
				require.Nil(t, e.Nodes, "listings leave nodes out")
				requireTime(t, when, e.CreatedAt)
				seen = append(seen, e.ID)
			}
			if next == "" {
				return seen
			}
			cursor = next
		}
	}
	require.Equal(t, []string{ids[4], ids[3], ids[2], ids[1], ids[0]}, list(persistence.ExecutionFilter{}))
	require.Equal(t, []string{ids[4], ids[2], ids[0]}, list(persistence.ExecutionFilter{WorkflowID: wfA}))
	require.Equal(t, []string{ids[3], ids[1]}, list(persistence.ExecutionFilter{WorkflowID: wfB}))
	require.Equal(t, []string{ids[4], ids[3]}, list(persistence.ExecutionFilter{Status: persistence.StatusQueued}))
	require.Equal(t, []string{ids[2]}, list(persistence.ExecutionFilter{Status: persistence.StatusRunning}))
	require.Equal(t, []string{ids[0]}, list(persistence.ExecutionFilter{Status: persistence.StatusCompleted}))
	require.Equal(t, []string{ids[1]}, list(persistence.ExecutionFilter{WorkflowID: wfB, Status: persistence.StatusFailed}))
	require.Empty(t, list(persistence.ExecutionFilter{WorkflowID: wfA, Status: persistence.StatusFailed}))
	require.Empty(t, list(persistence.ExecutionFilter{WorkflowID: "01JNONE"}))

	// Listed executions carry their state.
	page, _, err := b.store.ListExecutions(b.ctx, b.ann.ID, persistence.ExecutionFilter{Status: persistence.StatusCompleted}, persistence.Page{})
	require.NoError(t, err)
	require.Len(t, page, 1)
	require.NotNil(t, page[0].StartedAt)
	requireTime(t, when.Add(time.Minute), *page[0].FinishedAt)

	// Same paging rules as workflows.
	page, next, err := b.store.ListExecutions(b.ctx, b.ann.ID, persistence.ExecutionFilter{}, persistence.Page{Limit: 5})
	require.NoError(t, err)
	require.Len(t, page, 5)
	require.Empty(t, next)
	page, next, err = b.store.ListExecutions(b.ctx, b.ann.ID, persistence.ExecutionFilter{}, persistence.Page{})
	require.NoError(t, err)
	require.Len(t, page, 5)
	require.Empty(t, next)
	page, _, err = b.store.ListExecutions(b.ctx, b.ann.ID, persistence.ExecutionFilter{}, persistence.Page{Limit: 1000})
	require.NoError(t, err)
	require.Len(t, page, 5)
	page, next, err = b.store.ListExecutions(b.ctx, b.ann.ID, persistence.ExecutionFilter{}, persistence.Page{Limit: -3})
	require.NoError(t, err)
	require.Len(t, page, 1)
	require.Equal(t, ids[4], next)
}

func testExecutionsApply(t *testing.T, b *bundle) {
	e := b.execution(t, newExecution(b.ann, "01JWF", ""))
	started := when.Add(time.Second)

	res := b.apply(t, persistence.ExecutionUpdate{ID: e.ID, Start: &started, Reload: true})
	require.False(t, res.Finished)
	require.Equal(t, persistence.StatusRunning, res.Execution.Status)
	requireTime(t, started, *res.Execution.StartedAt)
	require.Empty(t, res.Execution.Nodes)

	// A second start (a redelivery) changes nothing; no reload, no execution.
	res = b.apply(t, persistence.ExecutionUpdate{ID: e.ID, Start: ptr(started.Add(time.Hour))})
	require.Nil(t, res.Execution)
	got, err := b.store.GetExecution(b.ctx, b.ann.ID, e.ID)
	require.NoError(t, err)
	requireTime(t, started, *got.StartedAt)

	finished := started.Add(2 * time.Second)
	fail := &persistence.ExecutionError{NodeID: "b", Code: "timeout", Message: "too slow"}
	res = b.apply(t, persistence.ExecutionUpdate{ID: e.ID, Reload: true,
		Finish: &persistence.Finish{Status: persistence.StatusFailed, Error: fail, At: finished}})
	require.True(t, res.Finished)
	require.Equal(t, persistence.StatusFailed, res.Execution.Status)
	require.Equal(t, fail, res.Execution.Error)
	requireTime(t, finished, *res.Execution.FinishedAt)

	// Terminal is final: another finish and a late start change nothing.
	res = b.apply(t, persistence.ExecutionUpdate{ID: e.ID, Start: ptr(when), Reload: true,
		Finish: &persistence.Finish{Status: persistence.StatusCompleted, Output: json.RawMessage(`{"x":1}`), At: finished.Add(time.Hour)}})
	require.False(t, res.Finished)
	require.True(t, res.Ended, "the update met an ended execution")
	require.Equal(t, persistence.StatusFailed, res.Execution.Status)
	require.Nil(t, res.Execution.Output)
	requireTime(t, finished, *res.Execution.FinishedAt)
	requireTime(t, started, *res.Execution.StartedAt)

	// A queued execution can be finished directly (cancelled before it ran).
	q := b.execution(t, newExecution(b.ann, "01JWF", ""))
	res = b.apply(t, persistence.ExecutionUpdate{ID: q.ID, Reload: true,
		Finish: &persistence.Finish{Status: persistence.StatusCancelled, At: finished}})
	require.True(t, res.Finished)
	require.False(t, res.Ended)
	require.Equal(t, persistence.StatusCancelled, res.Execution.Status)
	require.Nil(t, res.Execution.StartedAt)

	// A starter that did not know it was cancelled (it ran from a signed
	// submission) writes nothing to it: no start, no nodes, no logs.
	res = b.apply(t, persistence.ExecutionUpdate{ID: q.ID, Start: &started, Reload: true,
		Nodes: map[string]*persistence.NodeState{"a": {Type: "input", Status: persistence.StatusCompleted, Attempts: 1}},
		Logs:  []persistence.NodeLog{{NodeID: "a", At: started, Level: "info", Message: "late"}}})
	require.True(t, res.Ended)
	require.False(t, res.Finished)
	require.Equal(t, persistence.StatusCancelled, res.Execution.Status)
	require.Nil(t, res.Execution.StartedAt)
	require.Empty(t, res.Execution.Nodes)

	// Create: an update may record the execution it starts, unless it is
	// stored already (the starter of a signed submission racing the
	// ingress's own write); either way there is one execution, as first
	// recorded, with the update applied.
	fresh := newExecution(b.ann, "01JWF", "")
	res = b.apply(t, persistence.ExecutionUpdate{ID: fresh.ID, Create: fresh, Start: &started, Reload: true,
		Nodes: map[string]*persistence.NodeState{
			"a": {Type: "input", Status: persistence.StatusCompleted, Attempts: 1},
			"b": {Type: "transform", Status: persistence.StatusFailed, Attempts: 2, StartedAt: &started, FinishedAt: &finished,
				Output: json.RawMessage(`{"partial":[1,2]}`), Error: &persistence.NodeError{Code: "expression_failed", Message: "no"}},
		},
		Finish: &persistence.Finish{Status: persistence.StatusCompleted, Output: json.RawMessage(`{"ok":true}`), At: finished}})
	require.True(t, res.Finished)
	got, err = b.store.GetExecution(b.ctx, b.ann.ID, fresh.ID)
	require.NoError(t, err)
	require.Equal(t, persistence.StatusCompleted, got.Status)
	require.Equal(t, `{"n": 1, "s":"x"}`, string(got.Inputs))
	requireTime(t, started, *got.StartedAt)
	requireTime(t, finished, *got.FinishedAt)
	require.JSONEq(t, `{"ok":true}`, string(got.Output))
	require.Len(t, got.Nodes, 2)
	require.Equal(t, persistence.StatusCompleted, got.Nodes["a"].Status)
	require.Nil(t, got.Nodes["a"].StartedAt)
	nb := got.Nodes["b"]
	require.Equal(t, "transform", nb.Type)
	require.Equal(t, persistence.StatusFailed, nb.Status)
	require.Equal(t, 2, nb.Attempts)
	requireTime(t, started, *nb.StartedAt)
	requireTime(t, finished, *nb.FinishedAt)
	require.JSONEq(t, `{"partial":[1,2]}`, string(nb.Output))
	require.Equal(t, &persistence.NodeError{Code: "expression_failed", Message: "no"}, nb.Error)
	// Recorded by the ingress first, then created, run and ended by one
	// update: applied to the record as stored.
	early := newExecution(b.ann, "01JWF", "")
	b.execution(t, early)
	late := *early
	late.Inputs = json.RawMessage(`{"n":3}`)
	res = b.apply(t, persistence.ExecutionUpdate{ID: early.ID, Create: &late, Start: &started, Reload: true,
		Nodes:  map[string]*persistence.NodeState{"a": {Type: "input", Status: persistence.StatusCompleted, Attempts: 1, Output: json.RawMessage(`{"x":1}`)}},
		Finish: &persistence.Finish{Status: persistence.StatusCompleted, Output: json.RawMessage(`{"ok":1}`), At: finished}})
	require.True(t, res.Finished)
	require.Equal(t, persistence.StatusCompleted, res.Execution.Status)
	require.JSONEq(t, string(early.Inputs), string(res.Execution.Inputs), "stored as first recorded")
	require.JSONEq(t, `{"x":1}`, string(res.Execution.Nodes["a"].Output))
	// Created and started, not finished: running.
	runningOne := newExecution(b.ann, "01JWF", "")
	res = b.apply(t, persistence.ExecutionUpdate{ID: runningOne.ID, Create: runningOne, Start: &started, Reload: true})
	require.False(t, res.Finished)
	require.Equal(t, persistence.StatusRunning, res.Execution.Status)
	requireTime(t, started, *res.Execution.StartedAt)
	require.Nil(t, res.Execution.FinishedAt)
	again := *fresh
	again.Inputs = json.RawMessage(`{"n":2}`)
	_, created, err := b.store.CreateExecution(b.ctx, &again)
	require.NoError(t, err)
	require.False(t, created, "the ingress's own write comes second: nothing changes")
	res = b.apply(t, persistence.ExecutionUpdate{ID: fresh.ID, Create: &again, Reload: true})
	require.True(t, res.Ended)
	require.Equal(t, `{"n": 1, "s":"x"}`, string(res.Execution.Inputs), "stored as first recorded")
	_, err = b.store.ApplyExecution(b.ctx, persistence.ExecutionUpdate{ID: "other", Create: fresh})
	require.Error(t, err, "Create must be the execution updated")

	// Start, nodes and finish in one update: output is kept byte for byte.
	one := b.execution(t, newExecution(b.ann, "01JWF", ""))
	res = b.apply(t, persistence.ExecutionUpdate{ID: one.ID, Start: &started, Reload: true,
		Nodes:  map[string]*persistence.NodeState{"a": {Type: "input", Status: persistence.StatusCompleted, Attempts: 1}},
		Finish: &persistence.Finish{Status: persistence.StatusCompleted, Output: json.RawMessage(`{"sum": 3}`), At: finished}})
	require.True(t, res.Finished)
	got, err = b.store.GetExecution(b.ctx, b.ann.ID, one.ID)
	require.NoError(t, err)
	require.Equal(t, res.Execution, got)
	require.Equal(t, persistence.StatusCompleted, got.Status)
	require.Equal(t, `{"sum": 3}`, string(got.Output))
	require.Nil(t, got.Error)
	requireTime(t, started, *got.StartedAt)
	require.Len(t, got.Nodes, 1)
}

func testExecutionsApplyNodes(t *testing.T, b *bundle) {
	e := b.execution(t, newExecution(b.ann, "01JWF", ""))
	t0 := when
	t1 := when.Add(1500 * time.Millisecond)
	node := func(u persistence.ExecutionUpdate) map[string]*persistence.NodeState {
		t.Helper()
		u.ID, u.Reload = e.ID, true
		return b.apply(t, u).Execution.Nodes
	}
	write := func(id string, n *persistence.NodeState) map[string]*persistence.NodeState {
		t.Helper()
		return node(persistence.ExecutionUpdate{Nodes: map[string]*persistence.NodeState{id: n}})
	}

	nodes := write("a", &persistence.NodeState{Type: "http", Status: persistence.StatusRunning, Attempts: 1, StartedAt: &t0})
	require.Equal(t, &persistence.NodeState{Type: "http", Status: persistence.StatusRunning, Attempts: 1, StartedAt: nodes["a"].StartedAt}, nodes["a"])
	requireTime(t, t0, *nodes["a"].StartedAt)

	// A non-terminal write replaces a non-terminal one.
	nodes = write("a", &persistence.NodeState{Type: "http", Status: persistence.StatusRunning, Attempts: 2, StartedAt: &t1})
	require.Equal(t, 2, nodes["a"].Attempts)
	requireTime(t, t1, *nodes["a"].StartedAt)

	// The first terminal write wins...
	nodes = write("a", &persistence.NodeState{Type: "http", Status: persistence.StatusCompleted, Attempts: 2,
		StartedAt: &t1, FinishedAt: ptr(t1.Add(time.Second)), Output: json.RawMessage(`{"status": 200}`)})
	want := nodes["a"]
	require.Equal(t, persistence.StatusCompleted, want.Status)
	require.Equal(t, `{"status": 200}`, string(want.Output))
	require.Nil(t, want.Error)
	requireTime(t, t1.Add(time.Second), *want.FinishedAt)

	// ...so a late running write (a redelivery) and a second terminal
	// write are both ignored.
	nodes = write("a", &persistence.NodeState{Type: "http", Status: persistence.StatusRunning, Attempts: 3, StartedAt: &t1})
	require.Equal(t, want, nodes["a"])
	nodes = write("a", &persistence.NodeState{Type: "http", Status: persistence.StatusFailed, Attempts: 3,
		Error: &persistence.NodeError{Code: "http_500", Message: "boom"}})
	require.Equal(t, want, nodes["a"])

	// Several nodes at once; skipped and failed are terminal too.
	nodes = node(persistence.ExecutionUpdate{Nodes: map[string]*persistence.NodeState{
		"b": {Type: "condition", Status: persistence.NodeSkipped},
		"c": {Type: "ai", Status: persistence.StatusFailed, Attempts: 3, Error: &persistence.NodeError{Code: "quota", Message: "out of tokens"}},
		"d": {Type: "transform", Status: persistence.StatusRunning, Attempts: 1},
	}})
	require.Len(t, nodes, 4)
	require.Equal(t, want, nodes["a"])
	require.Equal(t, persistence.NodeSkipped, nodes["b"].Status)
	require.Nil(t, nodes["b"].Output)
	require.Nil(t, nodes["b"].StartedAt)
	require.Equal(t, &persistence.NodeError{Code: "quota", Message: "out of tokens"}, nodes["c"].Error)
	nodes = node(persistence.ExecutionUpdate{Nodes: map[string]*persistence.NodeState{
		"b": {Type: "condition", Status: persistence.StatusCompleted, Output: json.RawMessage(`true`)},
		"c": {Type: "ai", Status: persistence.StatusRunning, Attempts: 4},
		"d": {Type: "transform", Status: persistence.StatusCompleted, Attempts: 1, Output: json.RawMessage(`[1,2]`)},
	}})
	require.Equal(t, persistence.NodeSkipped, nodes["b"].Status)
	require.Equal(t, persistence.StatusFailed, nodes["c"].Status)
	require.Equal(t, 3, nodes["c"].Attempts)
	require.Equal(t, `[1,2]`, string(nodes["d"].Output))

	// Reads see what the reload saw.
	got, err := b.store.GetExecution(b.ctx, b.ann.ID, e.ID)
	require.NoError(t, err)
	require.Equal(t, nodes, got.Nodes)
	loaded, err := b.store.LoadExecution(b.ctx, e.ID)
	require.NoError(t, err)
	require.Equal(t, got, loaded)
}

// testExecutionsConcurrentNodes races terminal writes of one node: one
// wins and stays.
func testExecutionsConcurrentNodes(t *testing.T, b *bundle) {
	e := b.execution(t, newExecution(b.ann, "01JWF", ""))
	const n = 5
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			_, err := b.store.ApplyExecution(b.ctx, persistence.ExecutionUpdate{ID: e.ID, Nodes: map[string]*persistence.NodeState{
				"a": {Type: "http", Status: persistence.StatusCompleted, Attempts: i + 1, Output: json.RawMessage(fmt.Sprint(i))},
			}})
			if err != nil {
				t.Errorf("apply %d: %v", i, err)
			}
		})
	}
	wg.Wait()
	got, err := b.store.LoadExecution(b.ctx, e.ID)
	require.NoError(t, err)
	a := got.Nodes["a"]
	require.Equal(t, persistence.StatusCompleted, a.Status)
	require.Equal(t, fmt.Sprint(a.Attempts-1), string(a.Output), "one write, whole")

	b.apply(t, persistence.ExecutionUpdate{ID: e.ID, Nodes: map[string]*persistence.NodeState{
		"a": {Type: "http", Status: persistence.StatusFailed, Attempts: 9},
	}})
	again, err := b.store.LoadExecution(b.ctx, e.ID)
	require.NoError(t, err)
	require.Equal(t, a, again.Nodes["a"])
}

// testExecutionsConcurrentFinish races finishers with different outcomes,
// as completion racing a cancel: exactly one learns it won, and its
// outcome is the one stored.
func testExecutionsConcurrentFinish(t *testing.T, b *bundle) {
	e := b.execution(t, newExecution(b.ann, "01JWF", ""))
	b.apply(t, persistence.ExecutionUpdate{ID: e.ID, Start: ptr(when)})
	statuses := []string{persistence.StatusCompleted, persistence.StatusFailed, persistence.StatusCancelled,
		persistence.StatusCompleted, persistence.StatusFailed}
	var (
		wg       sync.WaitGroup
		finished [5]bool
	)
	for i, status := range statuses {
		wg.Go(func() {
			res, err := b.store.ApplyExecution(b.ctx, persistence.ExecutionUpdate{ID: e.ID, Finish: &persistence.Finish{
				Status: status, Output: json.RawMessage(fmt.Sprintf(`{"by":%d}`, i)), At: when.Add(time.Duration(i) * time.Second),
			}})
			if err != nil {
				t.Errorf("finish %d: %v", i, err)
				return
			}
			finished[i] = res.Finished
		})
	}
	wg.Wait()
	winner := -1
	for i, f := range finished {
		if f {
			require.Equal(t, -1, winner, "two finishers won")
			winner = i
		}
	}
	require.NotEqual(t, -1, winner, "no finisher won")
	got, err := b.store.GetExecution(b.ctx, b.ann.ID, e.ID)
	require.NoError(t, err)
	require.Equal(t, statuses[winner], got.Status)
	require.Equal(t, fmt.Sprintf(`{"by":%d}`, winner), string(got.Output))
	requireTime(t, when.Add(time.Duration(winner)*time.Second), *got.FinishedAt)
}

func testExecutionsLogs(t *testing.T, b *bundle) {
	e := b.execution(t, newExecution(b.ann, "01JWF", ""))
	logs, err := b.store.ExecutionLogs(b.ctx, b.ann.ID, e.ID, 10)
	require.NoError(t, err)
	require.Empty(t, logs)

	line := func(i int) persistence.NodeLog {
		return persistence.NodeLog{NodeID: fmt.Sprintf("n%d", i%2), At: when.Add(time.Duration(i) * time.Millisecond),
			Level: "info", Message: fmt.Sprintf("line %d", i)}
	}
	b.apply(t, persistence.ExecutionUpdate{ID: e.ID, Logs: []persistence.NodeLog{line(0), line(1), line(2)}})
	b.apply(t, persistence.ExecutionUpdate{ID: e.ID, Start: ptr(when), Logs: []persistence.NodeLog{line(3), line(4)}})

	logs, err = b.store.ExecutionLogs(b.ctx, b.ann.ID, e.ID, 10)
	require.NoError(t, err)
	require.Len(t, logs, 5)
	for i, l := range logs {
		want := line(i)
		require.Equal(t, want.NodeID, l.NodeID)
		require.Equal(t, want.Level, l.Level)
		require.Equal(t, want.Message, l.Message, "oldest first")
		requireTime(t, want.At, l.At)
	}
	logs, err = b.store.ExecutionLogs(b.ctx, b.ann.ID, e.ID, 2)
	require.NoError(t, err)
	require.Len(t, logs, 2)
	require.Equal(t, "line 1", logs[1].Message)

	_, err = b.store.ExecutionLogs(b.ctx, b.ann.ID, newID(), 10)
	requireCode(t, events.CodeNotFound, err)
}

func testExecutionsUnfinished(t *testing.T, b *bundle) {
	at := func(d time.Duration) *persistence.Execution {
		e := newExecution(b.ann, "01JWF", "")
		e.CreatedAt = when.Add(d)
		return b.execution(t, e)
	}
	newer := at(2 * time.Minute) // queued
	older := at(time.Minute)     // running
	done := at(0)                // completed
	bobs := newExecution(b.bob, "01JWF", "")
	bobs.CreatedAt = when.Add(90 * time.Second)
	b.execution(t, bobs) // queued, another user's: the reconciler sees all
	late := at(time.Hour)
	b.apply(t, persistence.ExecutionUpdate{ID: older.ID, Start: ptr(when)})
	b.finish(t, done.ID, persistence.StatusCompleted)

	ids := func(before time.Time, limit int) []string {
		t.Helper()
		list, err := b.store.UnfinishedExecutions(b.ctx, before, limit)
		require.NoError(t, err)
		var ids []string
		for _, e := range list {
			require.Nil(t, e.Nodes)
			ids = append(ids, e.ID)
		}
		return ids
	}
	require.Equal(t, []string{older.ID, bobs.ID, newer.ID}, ids(when.Add(10*time.Minute), 10))
	require.Equal(t, []string{older.ID, bobs.ID}, ids(when.Add(10*time.Minute), 2))
	require.Equal(t, []string{older.ID}, ids(when.Add(time.Minute+time.Millisecond), 10))
	require.Empty(t, ids(when, 10))
	require.Equal(t, []string{older.ID, bobs.ID, newer.ID, late.ID}, ids(when.Add(2*time.Hour), 10))
}

func testExecutionsNotFound(t *testing.T, b *bundle) {
	missing := newID()
	_, err := b.store.GetExecution(b.ctx, b.ann.ID, missing)
	requireCode(t, events.CodeNotFound, err)
	_, err = b.store.LoadExecution(b.ctx, missing)
	requireCode(t, events.CodeNotFound, err)
	_, err = b.store.ExecutionLogs(b.ctx, b.ann.ID, missing, 10)
	requireCode(t, events.CodeNotFound, err)
	for _, u := range []persistence.ExecutionUpdate{
		{ID: missing},
		{ID: missing, Start: ptr(when)},
		{ID: missing, Nodes: map[string]*persistence.NodeState{"a": {Type: "input", Status: persistence.StatusCompleted}}},
		{ID: missing, Finish: &persistence.Finish{Status: persistence.StatusCompleted, At: when}},
		{ID: missing, Logs: []persistence.NodeLog{{NodeID: "a", At: when, Level: "info", Message: "x"}}},
		{ID: missing, Reload: true},
	} {
		_, err := b.store.ApplyExecution(b.ctx, u)
		requireCode(t, events.CodeNotFound, err)
	}
	// Nothing was left behind by the failed updates.
	stored, created, err := b.store.CreateExecution(b.ctx, &persistence.Execution{
		ID: missing, UserID: b.ann.ID, WorkflowID: "01JWF", WorkflowVersion: 1, Inputs: json.RawMessage(`{}`), CreatedAt: when})
	require.NoError(t, err)
	require.True(t, created)
	require.Equal(t, persistence.StatusQueued, stored.Status, "queued by default")
	got, err := b.store.GetExecution(b.ctx, b.ann.ID, missing)
	require.NoError(t, err)
	require.Empty(t, got.Nodes)
	require.Nil(t, got.FinishedAt)
	logs, err := b.store.ExecutionLogs(b.ctx, b.ann.ID, missing, 10)
	require.NoError(t, err)
	require.Empty(t, logs)
}

func testExecutionsInvalid(t *testing.T, b *bundle) {
	e := b.execution(t, newExecution(b.ann, "01JWF", ""))
	fresh := newExecution(b.ann, "01JWF", "")
	for _, u := range []persistence.ExecutionUpdate{
		// Recorded as it ends, in one write: its nodes are checked too.
		{ID: fresh.ID, Create: fresh, Nodes: map[string]*persistence.NodeState{"a": nil},
			Finish: &persistence.Finish{Status: persistence.StatusCompleted, At: when}},
		{ID: e.ID, Finish: &persistence.Finish{Status: persistence.StatusRunning, At: when}},
		{ID: e.ID, Finish: &persistence.Finish{Status: persistence.NodeSkipped, At: when}},
		{ID: e.ID, Nodes: map[string]*persistence.NodeState{"a": nil}},
		{ID: e.ID, Nodes: map[string]*persistence.NodeState{"a": {Type: "input"}}},
	} {
		_, err := b.store.ApplyExecution(b.ctx, u)
		requireCode(t, events.CodeInvalid, err)
	}
	got, err := b.store.GetExecution(b.ctx, b.ann.ID, e.ID)
	require.NoError(t, err)
	require.Equal(t, persistence.StatusQueued, got.Status)
	require.Empty(t, got.Nodes)
	_, err = b.store.GetExecution(b.ctx, b.ann.ID, fresh.ID)
	requireCode(t, events.CodeNotFound, err)
}
