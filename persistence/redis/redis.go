package redis

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/go-redis/redis_rate/v10"
	json "github.com/goccy/go-json"
	goredis "github.com/redis/go-redis/v9"
	"golang.org/x/sync/singleflight"
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
	// One dial per attempt: go-redis otherwise redials five times, 100 ms
	// apart, so a command to a stopped server took 0.8 s to fail.
	opts.DialerRetries = 1
	opts.DialerRetryTimeout = 10 * time.Millisecond
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
//
// Redis is only a cache here, so an outage must cost a request nothing:
// after a failed command the cache counts Redis as down for DownFor, and
// meanwhile a Get is a miss and a Set is skipped without a round trip. A
// Del that fails is not forgotten: an entry left behind could be a revoked
// credential served again when Redis returns, so failed deletes are
// retried, before anything else is read, until Redis takes them.
type Cache struct {
	rdb    goredis.UniversalClient
	prefix string
	now    func() time.Time

	mu        sync.Mutex
	downUntil time.Time
	pending   map[string]struct{} // full keys whose delete failed
	retrying  bool
	closed    bool

	stop    chan struct{} // closed by Close: the retries end
	retries sync.WaitGroup
}

// DownFor is how long Redis is left alone after a command fails.
const DownFor = time.Second

// maxPendingAge bounds how long failed deletes are retried: past the
// longest TTL Weft gives an entry (an hour), the entries have expired.
const maxPendingAge = time.Hour

// NewCache returns a cache whose keys all start with prefix.
func NewCache(rdb goredis.UniversalClient, prefix string) *Cache {
	return &Cache{rdb: rdb, prefix: prefix, now: time.Now, pending: map[string]struct{}{}, stop: make(chan struct{})}
}

// Close stops retrying the deletes Redis did not take, and waits until
// the retries have stopped. It leaves the client open.
func (c *Cache) Close() {
	c.mu.Lock()
	if !c.closed {
		c.closed = true
		close(c.stop)
	}
	c.mu.Unlock()
	c.retries.Wait()
}

// Client returns the underlying client.
func (c *Cache) Client() goredis.UniversalClient { return c.rdb }

// Key returns the full key for name.
func (c *Cache) Key(name string) string { return c.prefix + name }

// ErrDown is returned while Redis is counted as down.
var ErrDown = errors.New("redis: down, not tried")

// up reports whether Redis may be tried now, first retrying the deletes it
// missed (a stale entry must not be read before its delete lands).
func (c *Cache) up(ctx context.Context) bool {
	c.mu.Lock()
	if c.now().Before(c.downUntil) {
		c.mu.Unlock()
		return false
	}
	if len(c.pending) == 0 {
		c.mu.Unlock()
		return true
	}
	keys := make([]string, 0, len(c.pending))
	for k := range c.pending {
		keys = append(keys, k)
	}
	c.mu.Unlock()
	if err := c.rdb.Del(ctx, keys...).Err(); err != nil {
		c.failed(err)
		return false
	}
	c.mu.Lock()
	for _, k := range keys {
		delete(c.pending, k)
	}
	c.mu.Unlock()
	return true
}

// failed counts Redis as down after a command failed for a reason other
// than the caller giving up.
func (c *Cache) failed(err error) {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return
	}
	c.mu.Lock()
	c.downUntil = c.now().Add(DownFor)
	c.mu.Unlock()
}

// Get decodes the value at key into v. It reports false, nil on a miss.
func (c *Cache) Get(ctx context.Context, key string, v any) (bool, error) {
	if !c.up(ctx) {
		return false, ErrDown
	}
	b, err := c.rdb.Get(ctx, c.prefix+key).Bytes()
	if errors.Is(err, goredis.Nil) {
		return false, nil
	}
	if err != nil {
		c.failed(err)
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
	if !c.up(ctx) {
		return ErrDown
	}
	err = c.rdb.Set(ctx, c.prefix+key, b, ttl).Err()
	c.failed(err)
	return err
}

// Del removes keys. A delete Redis does not take is kept and retried (see
// Cache), and reported, so the caller can say what may be stale meanwhile.
func (c *Cache) Del(ctx context.Context, keys ...string) error {
	full := make([]string, len(keys))
	for i, k := range keys {
		full[i] = c.prefix + k
	}
	err := ErrDown
	if c.up(ctx) {
		err = c.rdb.Del(ctx, full...).Err()
		c.failed(err)
	}
	if err != nil {
		c.keep(full)
	}
	return err
}

// keep records deletes to retry, and retries them in the background so
// that they land even if this process makes no other call.
func (c *Cache) keep(full []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, k := range full {
		c.pending[k] = struct{}{}
	}
	if c.retrying || c.closed {
		return
	}
	c.retrying = true
	c.retries.Add(1)
	go c.retry()
}

func (c *Cache) retry() {
	defer c.retries.Done()
	deadline := c.now().Add(maxPendingAge)
	t := time.NewTicker(DownFor / 2)
	defer t.Stop()
	for {
		select {
		case <-c.stop:
			c.mu.Lock()
			c.retrying = false
			c.mu.Unlock()
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		c.up(ctx)
		cancel()
		c.mu.Lock()
		if len(c.pending) == 0 || c.now().After(deadline) {
			clear(c.pending)
			c.retrying = false
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()
	}
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

	refills singleflight.Group

	mu        sync.Mutex
	grants    map[string]*grant
	downUntil time.Time // Redis failed: not tried again before then
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
	// A refill serves the callers that waited for it; one that finds it
	// spent by the others asks again. Each round takes budget or learns
	// that there is none, so this ends.
	for {
		now := l.now()
		l.mu.Lock()
		if g := l.grants[key]; g != nil && g.left > 0 && now.Before(g.expires) {
			g.left--
			l.mu.Unlock()
			return true, 0, nil
		}
		if now.Before(l.downUntil) {
			l.mu.Unlock()
			return false, 0, ErrDown
		}
		l.mu.Unlock()
		// One refill per key at a time: when a grant runs out under load,
		// the callers that find it empty together share one round trip
		// instead of each taking a chunk that the next overwrites.
		v, err, _ := l.refills.Do(key, func() (any, error) {
			// Not the first caller's cancel: the others wait on it too.
			return l.refill(context.WithoutCancel(ctx), key, limit, now)
		})
		if err != nil {
			return false, 0, err
		}
		if res := v.(*redis_rate.Result); res.Allowed == 0 {
			return false, res.RetryAfter, nil
		}
	}
}

// refill takes a chunk of key's budget from Redis into its grant.
func (l *Limiter) refill(ctx context.Context, key string, limit Limit, now time.Time) (*redis_rate.Result, error) {
	res, err := l.rl.AllowAtMost(ctx, l.prefix+key, limit, chunk(limit))
	if err != nil {
		if !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
			// Left alone for a while, as the cache does: an outage must
			// not cost every request a failed round trip.
			l.mu.Lock()
			l.downUntil = now.Add(DownFor)
			l.mu.Unlock()
		}
		return nil, err
	}
	if res.Allowed > 0 {
		l.mu.Lock()
		if len(l.grants) > 100_000 {
			// Many distinct keys (IPs): forget the stale grants.
			for k, g := range l.grants {
				if !now.Before(g.expires) {
					delete(l.grants, k)
				}
			}
		}
		l.grants[key] = &grant{left: res.Allowed, expires: now.Add(grantTTL)}
		l.mu.Unlock()
	}
	return res, nil
}
