package projector

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/weftdev/weft/events"
)

// cmdCounter is a client hook that counts the commands sent, MULTI, EXEC
// and those inside a pipeline included.
type cmdCounter struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *cmdCounter) DialHook(next goredis.DialHook) goredis.DialHook { return next }

func (c *cmdCounter) ProcessHook(next goredis.ProcessHook) goredis.ProcessHook {
	return func(ctx context.Context, cmd goredis.Cmder) error {
		c.add(cmd)
		return next(ctx, cmd)
	}
}

func (c *cmdCounter) ProcessPipelineHook(next goredis.ProcessPipelineHook) goredis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []goredis.Cmder) error {
		for _, cmd := range cmds {
			c.add(cmd)
		}
		return next(ctx, cmds)
	}
}

func (c *cmdCounter) add(cmd goredis.Cmder) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n[cmd.Name()]++
}

// take returns the counts so far and starts again from zero.
func (c *cmdCounter) take() (total int, byName map[string]int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, v := range c.n {
		total += v
	}
	byName, c.n = c.n, map[string]int{}
	return total, byName
}

// TestCommandsPerBatch counts the commands one batch of 256 fresh
// executions sends: the per-batch cost on the embedded server is mostly
// one parse and one socket write per command.
func TestCommandsPerBatch(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	counter := &cmdCounter{n: map[string]int{}}
	b.rdb.AddHook(counter)
	p := NewWithConfig(b.js, b.rdb, Config{Prefix: b.prefix})
	require.NoError(t, b.rdb.Set(ctx, p.k.marker(), "test", 0).Err())

	at := time.Now()
	batch := func(tag, kind string) []wireEvent {
		evs := make([]wireEvent, 256)
		for i := range evs {
			x := exec{id: fmt.Sprintf("%s-%04d", tag, i), user: fmt.Sprintf("u%d", i%8), wf: fmt.Sprintf("w%d", i%20), at: at}
			ev := x.ev(kind)
			if events.TerminalKind(kind) {
				ev = x.end(kind, float64(1+i%50), node("a", "INPUT", "completed"), node("b", "OUTPUT", "completed"))
			}
			evs[i] = wire(ev)
		}
		return evs
	}
	// The commands that read and write phases; the counters' come on top.
	for _, c := range []struct {
		name string
		evs  []wireEvent
		want map[string]int
	}{
		{"256 ended (a terminal event alone)", batch("e", events.KindCompleted),
			map[string]int{"watch": 1, "mget": 1, "hmget": 3, "multi": 1, "hset": 1, "mset": 1, "del": 1, "exec": 1}},
		{"256 open (queued)", batch("o", events.KindQueued),
			map[string]int{"watch": 1, "mget": 1, "hmget": 3, "multi": 1, "set": 256, "exec": 1}},
		{"the same 256 ending", batch("o", events.KindCompleted),
			map[string]int{"watch": 1, "mget": 1, "hmget": 3, "multi": 1, "hset": 1, "mset": 1, "del": 1, "exec": 1}},
	} {
		counter.take()
		require.NoError(t, p.applyEvents(ctx, c.evs))
		total, byName := counter.take()
		t.Logf("%s: %d commands %v", c.name, total, byName)
		for name := range byName {
			switch name {
			case "hincrby", "sadd", "expireat":
				delete(byName, name)
			}
		}
		require.Equal(t, c.want, byName, c.name)
	}
}
