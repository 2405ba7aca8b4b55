package ingress

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/weftdev/weft/events"
	"github.com/weftdev/weft/events/natstest"
	"github.com/weftdev/weft/persistence"
	"github.com/weftdev/weft/persistence/redis"
	"github.com/weftdev/weft/persistence/sqlite"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// countingStore counts workflow reads.
type countingStore struct {
	*sqlite.Store
	reads atomic.Int64
}

func (c *countingStore) GetWorkflow(ctx context.Context, userID, id string) (*persistence.Workflow, error) {
	c.reads.Add(1)
	time.Sleep(20 * time.Millisecond) // a slow store, so that the misses overlap
	return c.Store.GetWorkflow(ctx, userID, id)
}

// redisURL is a real Redis when WEFT_TEST_REDIS_URL names one, else the
// embedded server.
func redisURL(t *testing.T) string {
	if u := os.Getenv("WEFT_TEST_REDIS_URL"); u != "" {
		return u
	}
	e, err := redis.StartEmbedded("127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(e.Close)
	return e.URL()
}

// storeWithAnn is an embedded store holding one user, 01ann.
func storeWithAnn(t *testing.T) *sqlite.Store {
	ctx := context.Background()
	db, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "weft.db"))
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	require.NoError(t, db.CreateUser(ctx, &persistence.User{ID: "01ann", Email: "ann@example.com", Name: "Ann", PasswordHash: "x", CreatedAt: time.Now()}))
	return db
}

func TestWorkflowCacheLayers(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := storeWithAnn(t)
	store := &countingStore{Store: db}
	w := &persistence.Workflow{ID: "01wf" + newID(), UserID: "01ann", Name: "v1", Definition: []byte(`{"nodes":[]}`), CreatedAt: time.Now(), UpdatedAt: time.Now()}
	require.NoError(t, db.CreateWorkflow(ctx, w))

	natsURL := natstest.Start(t)
	rdb, err := redis.Connect(ctx, redisURL(t))
	require.NoError(t, err)
	t.Cleanup(func() { _ = rdb.Close() })
	prefix := "test:" + newID() + ":"
	// Two processes: each its own NATS connection and in-process layer,
	// one Redis and one store.
	open := func() *workflowCache {
		nc, err := nats.Connect(natsURL)
		require.NoError(t, err)
		t.Cleanup(nc.Close)
		c, err := newWorkflowCache(store, redis.NewCache(rdb, prefix), nc)
		require.NoError(t, err)
		t.Cleanup(c.stop)
		return c
	}
	a, b := open(), open()

	// A stampede of misses on one hot workflow reads the store once.
	var wg sync.WaitGroup
	for range 50 {
		wg.Go(func() {
			got, err := a.get(ctx, "01ann", w.ID)
			require.NoError(t, err)
			require.Equal(t, "v1", got.Name)
		})
	}
	wg.Wait()
	require.EqualValues(t, 1, store.reads.Load(), "one load for fifty concurrent misses")

	// The other process finds it in Redis.
	got, err := b.get(ctx, "01ann", w.ID)
	require.NoError(t, err)
	require.Equal(t, "v1", got.Name)
	require.EqualValues(t, 1, store.reads.Load(), "served from Redis")

	// Another user never gets it, from any layer.
	_, err = b.get(ctx, "01bob", w.ID)
	require.True(t, events.IsNotFound(err), "%v", err)

	// A change in one process reaches the other's in-process layer and Redis.
	w.Name, w.UpdatedAt = "v2", time.Now()
	require.NoError(t, db.UpdateWorkflow(ctx, w))
	a.changed(ctx, w.ID)
	require.Eventually(t, func() bool {
		got, err := b.get(ctx, "01ann", w.ID)
		return err == nil && got.Name == "v2"
	}, 5*time.Second, 10*time.Millisecond)
	var cached persistence.Workflow
	ok, err := redis.NewCache(rdb, prefix).Get(ctx, redisWorkflowKey(w.ID), &cached)
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, "v2", cached.Name, "Redis holds the new version")

	// A change announced to nobody (the message lost): the copy in
	// process is given up after localTTL, and Redis, which the changer
	// cleared, has the new version.
	w.Name, w.UpdatedAt = "v3", time.Now()
	require.NoError(t, db.UpdateWorkflow(ctx, w))
	require.NoError(t, redis.NewCache(rdb, prefix).Del(ctx, redisWorkflowKey(w.ID)))
	got, err = b.get(ctx, "01ann", w.ID)
	require.NoError(t, err)
	require.Equal(t, "v2", got.Name, "within localTTL the process keeps its copy")
	b.now = func() time.Time { return time.Now().Add(localTTL + time.Second) }
	got, err = b.get(ctx, "01ann", w.ID)
	require.NoError(t, err)
	require.Equal(t, "v3", got.Name, "past localTTL it looks again")

	// Deleted: gone from every layer.
	require.NoError(t, db.DeleteWorkflow(ctx, "01ann", w.ID))
	b.changed(ctx, w.ID)
	require.Eventually(t, func() bool {
		_, err := a.get(ctx, "01ann", w.ID)
		return events.IsNotFound(err)
	}, 5*time.Second, 10*time.Millisecond)
}
