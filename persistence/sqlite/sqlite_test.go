package sqlite_test

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/weftdev/weft/events"
	"github.com/weftdev/weft/persistence"
	"github.com/weftdev/weft/persistence/sqlite"
	"github.com/weftdev/weft/persistence/storetest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func open(t *testing.T) *sqlite.Store {
	t.Helper()
	s, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "weft.db"))
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, s.Close()) })
	return s
}

func TestStore(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(t *testing.T) persistence.Store { return open(t) })
}

// TestReopen checks that opening an existing file keeps its data and does
// not re-run migrations.
func TestReopen(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "weft.db")
	s, err := sqlite.Open(ctx, path)
	require.NoError(t, err)
	require.NoError(t, s.CreateUser(ctx, &persistence.User{ID: "01JREOPEN", Email: "ann@example.com"}))
	require.NoError(t, s.Close())

	s, err = sqlite.Open(ctx, path)
	require.NoError(t, err)
	defer func() { require.NoError(t, s.Close()) }()
	u, err := s.UserByEmail(ctx, "ann@example.com")
	require.NoError(t, err)
	require.Equal(t, "01JREOPEN", u.ID)
}

// TestGroupCommitIsolation sends many writes at once, some of which fail:
// they share transactions, but a failing one must not take the others
// down with it.
func TestGroupCommitIsolation(t *testing.T) {
	t.Parallel()
	s := open(t)
	ctx := t.Context()
	require.NoError(t, s.CreateUser(ctx, &persistence.User{ID: "01JTAKEN", Email: "taken@example.com"}))

	const n = 200
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			email := fmt.Sprintf("u%d@example.com", i)
			if i%3 == 0 {
				email = "taken@example.com"
			}
			errs[i] = s.CreateUser(ctx, &persistence.User{ID: fmt.Sprintf("01JU%04d", i), Email: email})
		})
	}
	wg.Wait()
	for i, err := range errs {
		_, lookup := s.UserByID(ctx, fmt.Sprintf("01JU%04d", i))
		if i%3 == 0 {
			require.True(t, events.IsConflict(err), "%d: %v", i, err)
			require.True(t, events.IsNotFound(lookup), "%d: %v", i, lookup)
			continue
		}
		require.NoError(t, err, "%d", i)
		require.NoError(t, lookup, "%d", i)
	}
}

// TestOptimisticWritesIsolation: the engine's execution writes run in
// their batches without savepoints; one that fails (here, an update of an
// execution never recorded) fails alone, and the others in its batch are
// all written.
func TestOptimisticWritesIsolation(t *testing.T) {
	t.Parallel()
	s := open(t)
	ctx := t.Context()
	const n = 200
	now := time.Now()
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			id := fmt.Sprintf("01JE%04d", i)
			u := persistence.ExecutionUpdate{ID: id, Start: &now,
				Nodes:  map[string]*persistence.NodeState{"a": {Type: "input", Status: persistence.StatusCompleted, Attempts: 1}},
				Finish: &persistence.Finish{Status: persistence.StatusCompleted, Output: json.RawMessage(`{"i":1}`), At: now}}
			if i%3 != 0 {
				u.Create = &persistence.Execution{ID: id, UserID: "01JUSER", WorkflowID: "01JWF", WorkflowVersion: 1,
					Status: persistence.StatusQueued, Inputs: json.RawMessage(`{}`), CreatedAt: now}
			}
			_, errs[i] = s.ApplyExecution(ctx, u)
		})
	}
	wg.Wait()
	batches, writes := sqlite.BatchStats(s)
	require.Less(t, batches, writes, "some writes shared a commit")
	require.Positive(t, sqlite.RetriedBatches(s), "a failure rolled back a batch")
	for i, err := range errs {
		got, lookup := s.LoadExecution(ctx, fmt.Sprintf("01JE%04d", i))
		if i%3 == 0 {
			require.True(t, events.IsNotFound(err), "%d: %v", i, err)
			require.True(t, events.IsNotFound(lookup), "%d: %v", i, lookup)
			continue
		}
		require.NoError(t, err, "%d", i)
		require.NoError(t, lookup, "%d", i)
		require.Equal(t, persistence.StatusCompleted, got.Status)
		require.Len(t, got.Nodes, 1)
	}
}

// TestCloseStopsWriter checks that writes after Close fail cleanly rather
// than hang (goleak in TestMain checks that the writer goroutine ended).
func TestCloseStopsWriter(t *testing.T) {
	t.Parallel()
	s, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "weft.db"))
	require.NoError(t, err)
	require.NoError(t, s.Ping(t.Context()))
	require.NoError(t, s.Close())
	err = s.CreateUser(t.Context(), &persistence.User{ID: "01JLATE", Email: "late@example.com"})
	require.Equal(t, events.CodeUnavailable, events.ErrorCode(err))
}
