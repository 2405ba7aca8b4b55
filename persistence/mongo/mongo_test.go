package mongo_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.uber.org/goleak"

	"github.com/weftdev/weft/events"
	"github.com/weftdev/weft/persistence"
	weftmongo "github.com/weftdev/weft/persistence/mongo"
	"github.com/weftdev/weft/persistence/mongo/mongotest"
	"github.com/weftdev/weft/persistence/storetest"
)

// uri is the server every test uses (see mongotest.Start).
var (
	uri   string
	admin *mongo.Client
	dbSeq atomic.Int64
)

func TestMain(m *testing.M) { os.Exit(run(m)) }

func run(m *testing.M) int {
	var (
		stop func()
		err  error
	)
	if uri, stop, err = mongotest.Start(); err != nil {
		fmt.Fprintln(os.Stderr, "start FerretDB:", err)
		return 1
	}
	if admin, err = mongo.Connect(options.Client().ApplyURI(uri)); err != nil {
		stop()
		fmt.Fprintln(os.Stderr, "connect:", err)
		return 1
	}
	code := m.Run()
	_ = admin.Disconnect(context.Background())
	// Stop FerretDB before looking for leaks: its goroutines end with it.
	stop()
	if code == 0 {
		code = leaks()
	}
	return code
}

func leaks() int {
	if err := goleak.Find(); err != nil {
		fmt.Fprintln(os.Stderr, "goleak:", err)
		return 1
	}
	return 0
}

// open gives each test its own database, dropped when the test ends, and
// returns its name for tests that look behind the store.
func open(t *testing.T) (*weftmongo.Store, string) {
	t.Helper()
	name := fmt.Sprintf("weft_test_%d_%d", os.Getpid(), dbSeq.Add(1))
	s, err := weftmongo.Open(t.Context(), uri, name)
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		require.NoError(t, admin.Database(name).Drop(ctx))
		require.NoError(t, s.Close())
	})
	return s, name
}

func TestStore(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(t *testing.T) persistence.Store {
		s, _ := open(t)
		return s
	})
}

// TestHeadRepair writes behind the store's back to fake the two ways a
// workflow head can lag its history: an update that crashed after
// appending its entry, and (FerretDB v1) a slow update putting an older
// head back. Reads must see through both and repair the head.
func TestHeadRepair(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s, name := open(t)
	db := admin.Database(name)
	const id, user = "01JREPAIR", "01JUSER"
	ts := time.Date(2025, 1, 2, 3, 4, 5, 6e6, time.UTC)

	w := &persistence.Workflow{ID: id, UserID: user, Name: "v1", Definition: json.RawMessage(`{"v":1}`), CreatedAt: ts}
	require.NoError(t, s.CreateWorkflow(ctx, w))
	for _, v := range []string{"v2", "v3"} {
		require.NoError(t, s.UpdateWorkflow(ctx, &persistence.Workflow{ID: id, UserID: user, Name: v, Definition: json.RawMessage(`{}`)}))
	}
	// The crashed update: entry 4 exists, the head never moved to it.
	_, err := db.Collection("workflowVersions").InsertOne(ctx, bson.D{
		{Key: "_id", Value: id + ":4"}, {Key: "workflowId", Value: id}, {Key: "userId", Value: user},
		{Key: "version", Value: 4}, {Key: "name", Value: "v4"}, {Key: "description", Value: ""},
		{Key: "definition", Value: `{"v":4}`}, {Key: "createdAt", Value: ts}, {Key: "updatedAt", Value: ts},
		{Key: "deleted", Value: false},
	})
	require.NoError(t, err)
	regress := func(version int) {
		t.Helper()
		_, err := db.Collection("workflows").UpdateOne(ctx, bson.D{{Key: "_id", Value: id}},
			bson.D{{Key: "$set", Value: bson.D{{Key: "version", Value: version}, {Key: "name", Value: "stale"}, {Key: "deleted", Value: false}}}})
		require.NoError(t, err)
	}
	regress(1)

	list, _, err := s.ListWorkflows(ctx, user, persistence.Page{})
	require.NoError(t, err)
	require.Len(t, list, 1)
	require.Equal(t, 4, list[0].Version)
	require.Equal(t, "v4", list[0].Name)
	var head struct {
		Version int `bson:"version"`
	}
	require.NoError(t, db.Collection("workflows").FindOne(ctx, bson.D{{Key: "_id", Value: id}}).Decode(&head))
	require.Equal(t, 4, head.Version, "the read repaired the stored head")

	regress(2)
	got, err := s.GetWorkflow(ctx, user, id)
	require.NoError(t, err)
	require.Equal(t, 4, got.Version)
	require.JSONEq(t, `{"v":4}`, string(got.Definition))

	regress(3)
	up := &persistence.Workflow{ID: id, UserID: user, Name: "v5", Definition: json.RawMessage(`{}`)}
	require.NoError(t, s.UpdateWorkflow(ctx, up))
	require.Equal(t, 5, up.Version, "an update after a crash takes the next free version")

	// A stale head must not bring back a deleted workflow.
	require.NoError(t, s.DeleteWorkflow(ctx, user, id))
	regress(5)
	_, err = s.GetWorkflow(ctx, user, id)
	require.True(t, events.IsNotFound(err), "got %v", err)
	regress(5)
	list, _, err = s.ListWorkflows(ctx, user, persistence.Page{})
	require.NoError(t, err)
	require.Empty(t, list)
	_, err = s.GetWorkflowVersion(ctx, user, id, 6)
	require.True(t, events.IsNotFound(err), "the tombstone is not a version: %v", err)
	v5, err := s.GetWorkflowVersion(ctx, user, id, 5)
	require.NoError(t, err)
	require.Equal(t, "v5", v5.Name)
}

// TestReopen opens a store on a database that already has its collections
// and indexes, as every restart of a Weft process does.
func TestReopen(t *testing.T) {
	t.Parallel()
	first, name := open(t)
	u := &persistence.User{ID: "01JREOPEN", Email: "reopen@example.com", Name: "R", PasswordHash: "h"}
	require.NoError(t, first.CreateUser(t.Context(), u))
	second, err := weftmongo.Open(t.Context(), uri, name)
	require.NoError(t, err)
	defer second.Close()
	got, err := second.UserByEmail(t.Context(), "reopen@example.com")
	require.NoError(t, err)
	require.Equal(t, u.ID, got.ID)
}

// TestExecutionRepair writes behind the store's back to fake what a
// crash or (FerretDB v1) a stale replace leaves: an execution document
// that still says running although its final state was recorded, and an
// idempotency key claimed by a create that never inserted its execution.
func TestExecutionRepair(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s, name := open(t)
	db := admin.Database(name)
	const user = "01JUSER"
	ts := time.Date(2025, 1, 2, 3, 4, 5, 6e6, time.UTC)

	e := &persistence.Execution{ID: "01JEXEC1", UserID: user, WorkflowID: "01JWF", WorkflowVersion: 1, Inputs: json.RawMessage(`{}`), CreatedAt: ts}
	_, _, err := s.CreateExecution(ctx, e)
	require.NoError(t, err)
	res, err := s.ApplyExecution(ctx, persistence.ExecutionUpdate{ID: e.ID, Start: &ts,
		Finish: &persistence.Finish{Status: persistence.StatusCompleted, Output: json.RawMessage(`{"ok":true}`), At: ts}})
	require.NoError(t, err)
	require.True(t, res.Finished)
	regress := func() {
		t.Helper()
		_, err := db.Collection("executions").UpdateOne(ctx, bson.D{{Key: "_id", Value: e.ID}},
			bson.D{{Key: "$set", Value: bson.D{{Key: "status", Value: "running"}}}, {Key: "$unset", Value: bson.D{{Key: "output", Value: ""}, {Key: "finishedAt", Value: ""}}}})
		require.NoError(t, err)
	}

	regress()
	got, err := s.GetExecution(ctx, user, e.ID)
	require.NoError(t, err)
	require.Equal(t, persistence.StatusCompleted, got.Status)
	require.JSONEq(t, `{"ok":true}`, string(got.Output))
	var doc struct {
		Status string `bson:"status"`
	}
	require.NoError(t, db.Collection("executions").FindOne(ctx, bson.D{{Key: "_id", Value: e.ID}}).Decode(&doc))
	require.Equal(t, persistence.StatusCompleted, doc.Status, "the read repaired the stored document")

	regress()
	running, _, err := s.ListExecutions(ctx, user, persistence.ExecutionFilter{Status: persistence.StatusRunning}, persistence.Page{})
	require.NoError(t, err)
	require.Empty(t, running)
	regress()
	completed, _, err := s.ListExecutions(ctx, user, persistence.ExecutionFilter{Status: persistence.StatusCompleted}, persistence.Page{})
	require.NoError(t, err)
	require.Len(t, completed, 1)
	require.Equal(t, persistence.StatusCompleted, completed[0].Status)
	regress()
	unfinished, err := s.UnfinishedExecutions(ctx, ts.Add(time.Hour), 10)
	require.NoError(t, err)
	require.Empty(t, unfinished)
	regress()
	res, err = s.ApplyExecution(ctx, persistence.ExecutionUpdate{ID: e.ID, Reload: true,
		Finish: &persistence.Finish{Status: persistence.StatusCancelled, At: ts}})
	require.NoError(t, err)
	require.False(t, res.Finished, "the recorded end stays")
	require.Equal(t, persistence.StatusCompleted, res.Execution.Status)

	// A create that claimed its key and stopped: the next create with the
	// key finishes it and returns it.
	orphan := bson.D{{Key: "_id", Value: "01JEXEC2"}, {Key: "userId", Value: user}, {Key: "workflowId", Value: "01JWF"},
		{Key: "workflowVersion", Value: 1}, {Key: "status", Value: "queued"}, {Key: "inputs", Value: `{"a":1}`},
		{Key: "idempotencyKey", Value: "k1"}, {Key: "createdAt", Value: ts}}
	_, err = db.Collection("executionKeys").InsertOne(ctx, bson.D{{Key: "_id", Value: user + ":k1"}, {Key: "userId", Value: user},
		{Key: "executionId", Value: "01JEXEC2"}, {Key: "execution", Value: orphan}})
	require.NoError(t, err)
	stored, created, err := s.CreateExecution(ctx, &persistence.Execution{ID: "01JEXEC3", UserID: user, WorkflowID: "01JWF",
		WorkflowVersion: 1, IdempotencyKey: "k1", CreatedAt: ts})
	require.NoError(t, err)
	require.False(t, created)
	require.Equal(t, "01JEXEC2", stored.ID)
	require.Equal(t, `{"a":1}`, string(stored.Inputs))
	_, err = s.GetExecution(ctx, user, "01JEXEC3")
	require.True(t, events.IsNotFound(err), "got %v", err)
}
