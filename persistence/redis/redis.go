package redis

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/go-redis/redis_rate/v10"
	goredis "github.com/redis/go-redis/v9"
)

// Connect opens a client for a redis:// or rediss:// URL and checks that the
// server answers.
func Connect(ctx context.Context, url string) (*goredis.Client, error) {
	opts, err := goredis.ParseURL(url)
	if err != nil {
		return nil, fmt.Errorf("redis url: %w", err)
	}
	// Short timeouts: Redis is a cache here, and a slow cache must not hold
	// a request longer than going to the store would.
	opts.DialTimeout = 500 * time.Millisecond
	opts.ReadTimeout = 500 * time.Millisecond
	opts.WriteTimeout = 500 * time.Millisecond
	opts.MaxRetries = 1
	rdb := goredis.NewClient(opts)
	pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if err := rdb.Ping(pctx).Err(); err != nil {
		_ = rdb.Close()
		return nil, fmt.Errorf("redis ping: %w", err)
	}
	return rdb, nil
}

// Cache stores JSON values under one key prefix, so several Weft
// deployments (or tests) can share a Redis server without colliding.
type Cache struct {
	rdb    goredis.UniversalClient
	prefix string
}

// NewCache returns a cache whose keys all start with prefix.
func NewCache(rdb goredis.UniversalClient, prefix string) *Cache {
	return &Cache{rdb: rdb, prefix: prefix}
}

// Client returns the underlying client.
func (c *Cache) Client() goredis.UniversalClient { return c.rdb }

// Key returns the full key for name.
func (c *Cache) Key(name string) string { return c.prefix + name }

// Get decodes the value at key into v. It reports false, nil on a miss.
func (c *Cache) Get(ctx context.Context, key string, v any) (bool, error) {
	b, err := c.rdb.Get(ctx, c.prefix+key).Bytes()
	if errors.Is(err, goredis.Nil) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if err := json.Unmarshal(b, v); err != nil {
		// A value we cannot read is as good as absent; drop it.
		_ = c.rdb.Del(ctx, c.prefix+key).Err()
		return false, nil
	}
	return true, nil
}

// Set stores v at key for ttl.
func (c *Cache) Set(ctx context.Context, key string, v any, ttl time.Duration) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return c.rdb.Set(ctx, c.prefix+key, b, ttl).Err()
}

// Del removes keys.
func (c *Cache) Del(ctx context.Context, keys ...string) error {
	full := make([]string, len(keys))
	for i, k := range keys {
		full[i] = c.prefix + k
	}
	return c.rdb.Del(ctx, full...).Err()
}

// Ping checks that Redis answers.
func (c *Cache) Ping(ctx context.Context) error { return c.rdb.Ping(ctx).Err() }

// Limit is a rate: Rate events per Period, with bursts up to Burst.
type Limit = redis_rate.Limit

// PerMinute is a limit of n events a minute with a burst of n.
func PerMinute(n int) Limit { return redis_rate.PerMinute(n) }

// Limiter is a GCRA rate limiter kept in Redis, so a limit holds across
// every ingress replica. A process takes its budget from Redis a few
// events at a time and spends them locally for at most a second: one
// round trip (a Lua script) serves several requests, and a replica can
// run ahead of the global limit by at most one chunk.
type Limiter struct {
	rl     *redis_rate.Limiter
	prefix string
	now    func() time.Time

	mu     sync.Mutex
	grants map[string]*grant
}

// grant is budget taken from Redis and not spent yet.
type grant struct {
	left    int
	expires time.Time
}

// grantTTL bounds how long taken budget may be spent: budget is per
// period, so a process must not sit on it.
const grantTTL = time.Second

// NewLimiter returns a limiter whose keys start with prefix.
func NewLimiter(rdb goredis.UniversalClient, prefix string) *Limiter {
	return &Limiter{rl: redis_rate.NewLimiter(rdb), prefix: prefix, now: time.Now, grants: map[string]*grant{}}
}

// chunk is how many events one round trip takes for key: about a second's
// worth of the rate (a grant lives a second), at most a tenth of the burst
// so small limits stay exact, and at most 200. Each round trip is a Lua
// script, and the embedded server builds a Lua state for every one.
func chunk(limit Limit) int {
	perSecond := 0
	if limit.Period > 0 {
		perSecond = int(float64(limit.Rate) / limit.Period.Seconds())
	}
	return max(1, min(200, limit.Burst/10, perSecond))
}

// Allow takes one event from key's budget. When the budget is spent it
// reports false and how long until the next event is allowed.
func (l *Limiter) Allow(ctx context.Context, key string, limit Limit) (bool, time.Duration, error) {
	now := l.now()
	l.mu.Lock()
	if g := l.grants[key]; g != nil && g.left > 0 && now.Before(g.expires) {
		g.left--
		l.mu.Unlock()
		return true, 0, nil
	}
	l.mu.Unlock()

	res, err := l.rl.AllowAtMost(ctx, l.prefix+key, limit, chunk(limit))
	if err != nil {
		return false, 0, err
	}
	if res.Allowed == 0 {
		return false, res.RetryAfter, nil
	}
	l.mu.Lock()
	if len(l.grants) > 100_000 {
		// Many distinct keys (IPs): forget the stale grants.
		for k, g := range l.grants {
			if !now.Before(g.expires) {
				delete(l.grants, k)
			}
		}
	}
	l.grants[key] = &grant{left: res.Allowed - 1, expires: now.Add(grantTTL)}
	l.mu.Unlock()
	return true, 0, nil
}
