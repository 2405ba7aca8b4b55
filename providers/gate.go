package providers

import (
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
type redisGate struct {
	rdb   goredis.UniversalClient
	now   func() time.Time
	until atomic.Int64
}

const redisPause = 2 * time.Second

// client returns the Redis client, or nil while Redis is paused or absent.
func (g *redisGate) client() goredis.UniversalClient {
	if g == nil || g.rdb == nil || g.now().UnixNano() < g.until.Load() {
		return nil
	}
	return g.rdb
}

// check pauses Redis when err says it is unreachable; a missing key is
// not an error.
func (g *redisGate) check(err error) {
	if err != nil && !errors.Is(err, goredis.Nil) {
		g.until.Store(g.now().Add(redisPause).UnixNano())
	}
}
