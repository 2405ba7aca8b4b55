package providers

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	goredis "github.com/redis/go-redis/v9"
)

// redisGate stops the router from waiting on a Redis that is down: after
// a failed command, Redis is left alone for redisPause and everything that
// needs it falls back (local circuits only, no quota, no cache, no
// figures). A dead server costs a client most of a second per command in
// dial retries; without the gate every AI call would pay it several times.
//
// Every command runs on a context from ctx, detached from the caller's: a
// caller's deadline or cancellation must neither skip a quota count nor
// pass for Redis being down, which would pause quotas for everyone.
type redisGate struct {
	rdb   goredis.UniversalClient
	now   func() time.Time
	until atomic.Int64
}

const (
	redisPause   = 2 * time.Second
	redisTimeout = 500 * time.Millisecond
)

// client returns the Redis client, or nil while Redis is paused or absent.
func (g *redisGate) client() goredis.UniversalClient {
	if g == nil || g.rdb == nil || g.now().UnixNano() < g.until.Load() {
		return nil
	}
	return g.rdb
}

// ctx is the context for Redis commands made on behalf of parent: it keeps
// parent's values, not its deadline or cancellation, and gives Redis
// redisTimeout.
func (g *redisGate) ctx(parent context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(parent), redisTimeout)
}

// check pauses Redis when err says it is unreachable or too slow. A missing
// key is not an error, nor is a cancelled context: that is a caller leaving,
// not Redis failing. (A deadline passing is Redis being slower than
// redisTimeout, since commands run on contexts from ctx.)
func (g *redisGate) check(err error) {
	if err != nil && !errors.Is(err, goredis.Nil) && !errors.Is(err, context.Canceled) {
		g.until.Store(g.now().Add(redisPause).UnixNano())
	}
}
