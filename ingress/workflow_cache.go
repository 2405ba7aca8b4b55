package ingress

import (
	"context"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/nats-io/nats.go"
	"golang.org/x/sync/singleflight"

	"github.com/weftdev/weft/persistence"
	"github.com/weftdev/weft/persistence/redis"
)

// subjectWorkflowChanged tells every process that a workflow changed, so
// each drops its cached copy.
const subjectWorkflowChanged = "weft.cache.workflow"

// workflowCacheTTL is how long Redis keeps a workflow definition.
const workflowCacheTTL = 30 * time.Minute

// localTTL bounds how long a process uses its own copy without looking
// again: changes are announced over core NATS, at most once, and a process
// that missed one (say, while reconnecting) must not run an old version
// for long.
const localTTL = 30 * time.Second

// workflowCache keeps the latest version of hot workflows for the
// submission path, in two layers: in process (no round trip at all) and in
// Redis for 30 minutes (shared by every ingress replica), with the store as
// the truth. Concurrent misses of one workflow in a process make one load
// (singleflight), so a stampede on a hot key reaches Redis and the store
// once.
//
// An update or delete drops the entry here, deletes it from Redis, and
// tells every process over NATS to drop theirs. A load that raced with a
// change must not cache what it read: a generation per workflow, bumped by
// every change, is checked before caching (and after writing Redis, which
// is undone if a change came meanwhile); and a process that wrote Redis
// shortly before it hears of a change deletes the key again, in case its
// write landed after the changer's delete. A copy in process is used for
// localTTL at most.
type workflowCache struct {
	store persistence.Store
	redis *redis.Cache // nil: no Redis layer
	nc    *nats.Conn
	lru   *lru.Cache[string, localWorkflow]
	sub   *nats.Subscription
	group singleflight.Group
	now   func() time.Time

	mu      sync.Mutex
	gen     map[string]uint64    // of workflows being loaded: bumped on every change
	loading map[string]int       // loads in flight per workflow
	written map[string]time.Time // when this process last wrote a workflow to Redis
}

// localWorkflow is a copy in process and when it was taken.
type localWorkflow struct {
	w  *persistence.Workflow
	at time.Time
}

// rewriteWindow is how long after writing a workflow to Redis a process
// deletes it again on hearing of a change: longer than a change takes to
// travel over NATS.
const rewriteWindow = 5 * time.Second

func newWorkflowCache(store persistence.Store, cache *redis.Cache, nc *nats.Conn) (*workflowCache, error) {
	l, err := lru.New[string, localWorkflow](10_000)
	if err != nil {
		return nil, err
	}
	c := &workflowCache{store: store, redis: cache, nc: nc, lru: l, now: time.Now,
		gen: map[string]uint64{}, loading: map[string]int{}, written: map[string]time.Time{}}
	if c.sub, err = nc.Subscribe(subjectWorkflowChanged, func(m *nats.Msg) { c.heard(string(m.Data)) }); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *workflowCache) stop() { _ = c.sub.Unsubscribe() }

func redisWorkflowKey(id string) string { return "wf:" + id }

// get returns the latest live version of a user's workflow. Another
// user's workflow is not found, whichever layer holds it.
func (c *workflowCache) get(ctx context.Context, userID, id string) (*persistence.Workflow, error) {
	if e, ok := c.lru.Get(id); ok && e.w.UserID == userID && c.now().Sub(e.at) < localTTL {
		return e.w, nil
	}
	v, err, _ := c.group.Do(userID+"\x00"+id, func() (any, error) {
		// Detached from the first caller: its cancel must not fail the
		// others waiting on the same load.
		return c.load(context.WithoutCancel(ctx), userID, id)
	})
	if err != nil {
		return nil, err
	}
	return v.(*persistence.Workflow), nil
}

func (c *workflowCache) load(ctx context.Context, userID, id string) (*persistence.Workflow, error) {
	c.mu.Lock()
	gen := c.gen[id]
	c.loading[id]++
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		if c.loading[id]--; c.loading[id] == 0 {
			delete(c.loading, id)
			delete(c.gen, id) // nothing in flight can compare with it any more
		}
		c.mu.Unlock()
	}()
	if c.redis != nil {
		var w persistence.Workflow
		if ok, _ := c.redis.Get(ctx, redisWorkflowKey(id), &w); ok && w.UserID == userID {
			c.keep(id, gen, &w, false)
			return &w, nil
		}
	}
	w, err := c.store.GetWorkflow(ctx, userID, id)
	if err != nil {
		return nil, err
	}
	c.keep(id, gen, w, true)
	return w, nil
}

// keep caches w unless the workflow changed since the load began.
func (c *workflowCache) keep(id string, gen uint64, w *persistence.Workflow, toRedis bool) {
	c.mu.Lock()
	if c.gen[id] != gen {
		c.mu.Unlock()
		return
	}
	c.lru.Add(id, localWorkflow{w: w, at: c.now()})
	if toRedis && c.redis != nil {
		c.written[id] = time.Now() // so that a change heard from now on deletes it again
	}
	c.mu.Unlock()
	if !toRedis || c.redis == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := c.redis.Set(ctx, redisWorkflowKey(id), w, workflowCacheTTL); err != nil {
		return
	}
	c.mu.Lock()
	changed := c.gen[id] != gen
	c.mu.Unlock()
	if changed {
		// A change came while writing: what was written may be old.
		_ = c.redis.Del(ctx, redisWorkflowKey(id))
	}
}

// changed drops a workflow here and in Redis, and tells the other
// processes.
func (c *workflowCache) changed(ctx context.Context, id string) {
	c.drop(id)
	if c.redis != nil {
		// A failed delete is retried by the cache until Redis takes it.
		_ = c.redis.Del(ctx, redisWorkflowKey(id))
	}
	if err := c.nc.Publish(subjectWorkflowChanged, []byte(id)); err == nil {
		_ = c.nc.Flush()
	}
}

// heard handles a change made by any process (this one included).
func (c *workflowCache) heard(id string) {
	c.mu.Lock()
	at, wrote := c.written[id]
	delete(c.written, id)
	c.mu.Unlock()
	c.drop(id)
	if wrote && time.Since(at) < rewriteWindow && c.redis != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = c.redis.Del(ctx, redisWorkflowKey(id))
	}
}

func (c *workflowCache) drop(id string) {
	c.mu.Lock()
	if c.loading[id] > 0 {
		c.gen[id]++
	}
	c.lru.Remove(id)
	// Entries older than the window are of no more use.
	for k, at := range c.written {
		if time.Since(at) > rewriteWindow {
			delete(c.written, k)
		}
	}
	c.mu.Unlock()
}
