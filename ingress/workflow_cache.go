package ingress

import (
	"context"
	"sync"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/nats-io/nats.go"

	"github.com/weftdev/weft/persistence"
)

// subjectWorkflowChanged tells every process that a workflow changed, so
// each drops its cached copy.
const subjectWorkflowChanged = "weft.cache.workflow"

// workflowCache keeps the latest version of hot workflows in process: a
// submission reads its workflow without a store round trip. An update or
// delete anywhere drops the entry everywhere (a NATS message), and a load
// that raced with a change is not cached (generation check).
type workflowCache struct {
	store persistence.Store
	nc    *nats.Conn
	lru   *lru.Cache[string, *persistence.Workflow]
	sub   *nats.Subscription

	mu  sync.Mutex
	gen map[string]uint64 // bumped on every change of a workflow
}

func newWorkflowCache(store persistence.Store, nc *nats.Conn) (*workflowCache, error) {
	l, err := lru.New[string, *persistence.Workflow](10_000)
	if err != nil {
		return nil, err
	}
	c := &workflowCache{store: store, nc: nc, lru: l, gen: map[string]uint64{}}
	if c.sub, err = nc.Subscribe(subjectWorkflowChanged, func(m *nats.Msg) { c.drop(string(m.Data)) }); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *workflowCache) stop() { _ = c.sub.Unsubscribe() }

// get returns the latest live version of a user's workflow.
func (c *workflowCache) get(ctx context.Context, userID, id string) (*persistence.Workflow, error) {
	if w, ok := c.lru.Get(id); ok && w.UserID == userID {
		return w, nil
	}
	c.mu.Lock()
	gen := c.gen[id]
	c.mu.Unlock()
	w, err := c.store.GetWorkflow(ctx, userID, id)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	if c.gen[id] == gen {
		c.lru.Add(id, w)
	}
	c.mu.Unlock()
	return w, nil
}

// changed drops a workflow here and tells the other processes.
func (c *workflowCache) changed(id string) {
	c.drop(id)
	if err := c.nc.Publish(subjectWorkflowChanged, []byte(id)); err == nil {
		_ = c.nc.Flush()
	}
}

func (c *workflowCache) drop(id string) {
	c.mu.Lock()
	c.gen[id]++
	c.lru.Remove(id)
	c.mu.Unlock()
}
