package providers

import (
	"context"
	"errors"
	"sync"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"github.com/sony/gobreaker/v2"
)

// Circuit states, as the dashboard shows them.
const (
	CircuitClosed   = "closed"
	CircuitOpen     = "open"
	CircuitHalfOpen = "half-open"
)

var errCircuitOpen = errors.New("circuit open")

// breaker is one provider's circuit breaker. Each process counts its own
// failures with a gobreaker (consecutive failures trip it); the verdict
// "open" is shared through Redis so every worker skips a provider that one
// of them found down:
//
//   - open key, TTL = OpenFor: while it exists, every process refuses calls.
//   - tripped key, longer TTL: set with the open key; when the open key has
//     expired and tripped still exists the circuit is half-open everywhere,
//     and only the process that wins the probe key (SET NX) calls. A good
//     probe deletes tripped (closed everywhere); a bad one sets open again.
//
// Processes read the shared state at most once per StateCacheFor, so the
// check costs Redis one read a second per provider, not one per call. If
// Redis fails, each process falls back to its own breaker.
type breaker struct {
	cb                            *gobreaker.TwoStepCircuitBreaker[struct{}]
	redis                         *redisGate
	openKey, trippedKey, probeKey string
	openFor, cacheFor             time.Duration
	probeFor                      time.Duration
	now                           func() time.Time

	mu       sync.Mutex
	shared   string // CircuitClosed, CircuitOpen or CircuitHalfOpen
	readAt   time.Time
	readOnce bool
}

func newBreaker(name string, cfg BreakerConfig, probeFor time.Duration, redis *redisGate, prefix string, now func() time.Time) *breaker {
	b := &breaker{
		redis:      redis,
		openKey:    prefix + "ai:cb:" + name + ":open",
		trippedKey: prefix + "ai:cb:" + name + ":tripped",
		probeKey:   prefix + "ai:cb:" + name + ":probe",
		openFor:    cfg.OpenFor,
		cacheFor:   cfg.StateCacheFor,
		probeFor:   probeFor,
		now:        now,
		shared:     CircuitClosed,
	}
	threshold := cfg.Failures
	b.cb = gobreaker.NewTwoStepCircuitBreaker[struct{}](gobreaker.Settings{
		Name:        name,
		MaxRequests: 1,
		Timeout:     cfg.OpenFor,
		ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= threshold },
		// A caller giving up says nothing about the provider.
		IsExcluded: func(err error) bool { return errors.Is(err, context.Canceled) },
	})
	return b
}

// sharedState reads the shared state, from cache when it is fresh.
func (b *breaker) sharedState(ctx context.Context) string {
	rdb := b.redis.client()
	if rdb == nil {
		return CircuitClosed
	}
	now := b.now()
	b.mu.Lock()
	if b.readOnce && now.Sub(b.readAt) < b.cacheFor {
		s := b.shared
		b.mu.Unlock()
		return s
	}
	b.mu.Unlock()

	ctx, cancel := b.redis.ctx(ctx)
	defer cancel()
	var open, tripped *goredis.IntCmd
	_, err := rdb.Pipelined(ctx, func(p goredis.Pipeliner) error {
		open = p.Exists(ctx, b.openKey)
		tripped = p.Exists(ctx, b.trippedKey)
		return nil
	})
	b.redis.check(err)
	s := CircuitClosed
	switch {
	case err != nil:
		// Redis is down: trust this process's breaker alone.
	case open.Val() > 0:
		s = CircuitOpen
	case tripped.Val() > 0:
		s = CircuitHalfOpen
	}
	b.remember(s)
	return s
}

func (b *breaker) remember(s string) {
	b.mu.Lock()
	b.shared, b.readAt, b.readOnce = s, b.now(), true
	b.mu.Unlock()
}

// allow asks whether a call may go ahead. When it may, done must be called
// with the call's outcome: nil for a healthy answer, a non-nil error for a
// failure that speaks of the provider's health, context.Canceled for one
// that does not count.
func (b *breaker) allow(parent context.Context) (done func(failure error), err error) {
	// Redis commands run on a context of their own: the caller's may be the
	// one that runs out, and the verdict must still be shared.
	ctx, cancel := b.redis.ctx(parent)
	defer cancel()
	probe := false
	switch b.sharedState(ctx) {
	case CircuitOpen:
		return nil, errCircuitOpen
	case CircuitHalfOpen:
		rdb := b.redis.client()
		if rdb == nil {
			break // Redis just went away: this process's breaker decides
		}
		ok, err := rdb.SetNX(ctx, b.probeKey, "1", b.probeFor).Result()
		b.redis.check(err)
		if err == nil && !ok {
			return nil, errCircuitOpen // another process is probing
		}
		probe = err == nil
	}
	localDone, err := b.cb.Allow()
	if err != nil {
		if probe {
			b.redis.check(b.redis.rdb.Del(ctx, b.probeKey).Err())
		}
		return nil, errCircuitOpen
	}
	return func(failure error) {
		localDone(failure)
		wctx, cancel := b.redis.ctx(parent)
		defer cancel()
		counted := failure != nil && !errors.Is(failure, context.Canceled)
		switch {
		case counted && (probe || b.cb.State() == gobreaker.StateOpen):
			b.publishOpen(wctx)
		case probe && failure == nil:
			err := b.redis.rdb.Del(wctx, b.trippedKey, b.probeKey).Err()
			b.redis.check(err)
			if err == nil {
				b.remember(CircuitClosed)
			}
		case probe:
			b.redis.check(b.redis.rdb.Del(wctx, b.probeKey).Err())
		}
	}, nil
}

// publishOpen opens the circuit for every process.
func (b *breaker) publishOpen(ctx context.Context) {
	rdb := b.redis.client()
	if rdb == nil {
		return
	}
	_, err := rdb.TxPipelined(ctx, func(p goredis.Pipeliner) error {
		p.Set(ctx, b.openKey, b.now().UTC().Format(time.RFC3339Nano), b.openFor)
		// Half-open lasts until a probe succeeds, but not forever: a
		// provider nobody calls any more is closed again after a while.
		p.Set(ctx, b.trippedKey, "1", 20*b.openFor+time.Minute)
		p.Del(ctx, b.probeKey)
		return nil
	})
	b.redis.check(err)
	if err == nil {
		b.remember(CircuitOpen)
	}
}

// state is the circuit as the dashboard shows it: the shared verdict when
// there is one, else this process's breaker.
func (b *breaker) state(ctx context.Context) string {
	if s := b.sharedState(ctx); s != CircuitClosed {
		return s
	}
	switch b.cb.State() {
	case gobreaker.StateOpen:
		return CircuitOpen
	case gobreaker.StateHalfOpen:
		return CircuitHalfOpen
	}
	return CircuitClosed
}
