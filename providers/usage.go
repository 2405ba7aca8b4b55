package providers

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"time"

	goredis "github.com/redis/go-redis/v9"
)

// ledger keeps, in Redis, what every process needs to agree on: each
// provider's requests and tokens today (the quota), its calls, failures and
// recent latencies (the dashboard), and each user's usage and cost.
//
// The request quota is exact across processes: a call reserves its request
// with INCR before it is made and gives it back (DECR) if it is refused,
// over quota or rate limited. Under a token quota a call also reserves an
// estimate of its tokens (INCRBY) and settles to the real count once the
// answer tells it (nothing, if it failed), so calls in flight see each
// other; a call is refused when the tokens spent and reserved before it
// reach the quota. The token quota can still be passed, by the call that
// reaches it and by calls that spend more than they reserved. Keys are
// named by UTC day and expire after 24 h.
type ledger struct {
	redis     *redisGate
	prefix    string
	window    int
	retention time.Duration
	now       func() time.Time
}

const dayTTL = 24 * time.Hour

func (l *ledger) day() string { return l.now().UTC().Format("20060102") }

func (l *ledger) quotaKey(provider, day, what string) string {
	return l.prefix + "ai:quota:" + provider + ":" + day + ":" + what
}

func (l *ledger) statsKey(provider, day string) string {
	return l.prefix + "ai:stats:" + provider + ":" + day
}

func (l *ledger) latencyKey(provider string) string { return l.prefix + "ai:latency:" + provider }

func (l *ledger) usageKey(userID, day string) string {
	return l.prefix + "ai:usage:" + userID + ":" + day
}

var errOverQuota = errors.New("over quota")

// defaultTokenEstimate is what a call without MaxTokens reserves of a token
// quota for its answer.
const defaultTokenEstimate = 1024

// tokenEstimate is what a call reserves of a token quota: its MaxTokens (or
// defaultTokenEstimate) for the answer, and a quarter of a token a byte for
// the prompt. A classification reports no tokens.
func tokenEstimate(c call) int64 {
	if c.classify {
		return 0
	}
	n := int64(c.maxTokens)
	if n <= 0 {
		n = defaultTokenEstimate
	}
	return n + int64(len(c.system)+len(c.prompt))/4
}

// hold is what a call reserved of its provider's quota.
type hold struct {
	reqKey, tokKey string // empty when nothing was reserved
	tokens         int64
}

// reserve takes one request of the provider's daily quota, and under a
// token quota estimate tokens, refusing when the requests or tokens of
// today are spent. release gives the request back; record settles the
// tokens. When Redis fails the call goes ahead: a quota is a budget, and
// losing the count for a moment is better than losing AI.
func (l *ledger) reserve(ctx context.Context, provider string, cfg ProviderConfig, estimate int64) (hold, error) {
	rdb := l.redis.client()
	if rdb == nil {
		return hold{}, nil
	}
	ctx, cancel := l.redis.ctx(ctx)
	defer cancel()
	day := l.day()
	h := hold{reqKey: l.quotaKey(provider, day, "requests"), tokKey: l.quotaKey(provider, day, "tokens")}
	if cfg.DailyTokens > 0 {
		h.tokens = estimate
	}
	var n, tok *goredis.IntCmd
	_, err := rdb.Pipelined(ctx, func(p goredis.Pipeliner) error {
		n = p.Incr(ctx, h.reqKey)
		p.Expire(ctx, h.reqKey, dayTTL)
		tok = p.IncrBy(ctx, h.tokKey, h.tokens)
		p.Expire(ctx, h.tokKey, dayTTL)
		return nil
	})
	if err != nil {
		l.redis.check(err)
		return hold{}, nil
	}
	if (cfg.DailyRequests > 0 && n.Val() > cfg.DailyRequests) || (cfg.DailyTokens > 0 && tok.Val()-h.tokens >= cfg.DailyTokens) {
		_, err := rdb.Pipelined(ctx, func(p goredis.Pipeliner) error {
			p.Decr(ctx, h.reqKey)
			p.DecrBy(ctx, h.tokKey, h.tokens)
			return nil
		})
		l.redis.check(err)
		return hold{}, errOverQuota
	}
	return h, nil
}

// release gives back h's request, for a call the provider refused.
func (l *ledger) release(ctx context.Context, h hold) {
	rdb := l.redis.client()
	if rdb == nil || h.reqKey == "" {
		return
	}
	ctx, cancel := l.redis.ctx(ctx)
	defer cancel()
	l.redis.check(rdb.Decr(ctx, h.reqKey).Err())
}

// outcome is what one call did, for the ledger.
type outcome struct {
	provider string
	userID   string
	failed   bool
	latency  time.Duration
	usage    Usage
	// hold is what the call reserved: its tokens are settled to usage.
	hold hold
}

// record adds a call's figures in one round trip. It runs after the call,
// on a context of its own, so a caller's deadline never loses the count.
func (l *ledger) record(ctx context.Context, o outcome) {
	rdb := l.redis.client()
	if rdb == nil {
		return
	}
	ctx, cancel := l.redis.ctx(ctx)
	defer cancel()
	day := l.day()
	stats := l.statsKey(o.provider, day)
	_, err := rdb.Pipelined(ctx, func(p goredis.Pipeliner) error {
		p.HIncrBy(ctx, stats, "calls", 1)
		if o.failed {
			p.HIncrBy(ctx, stats, "failures", 1)
		}
		p.Expire(ctx, stats, dayTTL)
		tok := o.hold.tokKey
		if tok == "" {
			tok = l.quotaKey(o.provider, day, "tokens")
		}
		if d := int64(o.usage.PromptTokens+o.usage.CompletionTokens) - o.hold.tokens; d != 0 {
			p.IncrBy(ctx, tok, d)
			p.Expire(ctx, tok, dayTTL)
		}
		if o.failed {
			return nil
		}
		lat := l.latencyKey(o.provider)
		p.LPush(ctx, lat, o.latency.Milliseconds())
		p.LTrim(ctx, lat, 0, int64(l.window-1))
		p.Expire(ctx, lat, dayTTL)
		if o.userID != "" {
			u := l.usageKey(o.userID, day)
			pre := o.provider + "."
			p.HIncrBy(ctx, u, pre+"requests", 1)
			p.HIncrBy(ctx, u, pre+"promptTokens", int64(o.usage.PromptTokens))
			p.HIncrBy(ctx, u, pre+"completionTokens", int64(o.usage.CompletionTokens))
			if o.usage.CostUSD > 0 {
				p.HIncrByFloat(ctx, u, pre+"costUsd", o.usage.CostUSD)
			}
			p.Expire(ctx, u, l.retention)
		}
		return nil
	})
	l.redis.check(err)
}

// providerFigures are one provider's shared figures for the dashboard.
type providerFigures struct {
	calls, failures  int64
	requests, tokens int64
	p50Ms            float64
	latencies        int
}

// figures reads every provider's figures in one round trip.
func (l *ledger) figures(ctx context.Context, names []string) map[string]providerFigures {
	out := map[string]providerFigures{}
	rdb := l.redis.client()
	if rdb == nil {
		return out
	}
	day := l.day()
	type cmds struct {
		stats    *goredis.SliceCmd
		req, tok *goredis.StringCmd
		lat      *goredis.StringSliceCmd
	}
	all := map[string]cmds{}
	ctx, cancel := l.redis.ctx(ctx)
	defer cancel()
	_, err := rdb.Pipelined(ctx, func(p goredis.Pipeliner) error {
		for _, n := range names {
			all[n] = cmds{
				stats: p.HMGet(ctx, l.statsKey(n, day), "calls", "failures"),
				req:   p.Get(ctx, l.quotaKey(n, day, "requests")),
				tok:   p.Get(ctx, l.quotaKey(n, day, "tokens")),
				lat:   p.LRange(ctx, l.latencyKey(n), 0, -1),
			}
		}
		return nil
	})
	if l.redis.check(err); err != nil && !errors.Is(err, goredis.Nil) {
		return out
	}
	for n, c := range all {
		var f providerFigures
		if vals, err := c.stats.Result(); err == nil && len(vals) == 2 {
			f.calls = toInt(vals[0])
			f.failures = toInt(vals[1])
		}
		f.requests, _ = strconv.ParseInt(c.req.Val(), 10, 64)
		f.tokens, _ = strconv.ParseInt(c.tok.Val(), 10, 64)
		f.p50Ms, f.latencies = median(c.lat.Val())
		out[n] = f
	}
	return out
}

func toInt(v any) int64 {
	s, _ := v.(string)
	n, _ := strconv.ParseInt(s, 10, 64)
	return n
}

func median(vals []string) (float64, int) {
	xs := make([]float64, 0, len(vals))
	for _, v := range vals {
		if f, err := strconv.ParseFloat(v, 64); err == nil {
			xs = append(xs, f)
		}
	}
	if len(xs) == 0 {
		return 0, 0
	}
	slices.Sort(xs)
	m := len(xs) / 2
	if len(xs)%2 == 1 {
		return xs[m], len(xs)
	}
	return (xs[m-1] + xs[m]) / 2, len(xs)
}

// UserUsage is one user's AI use on one UTC day.
type UserUsage struct {
	Day       string                   `json:"day"`
	Providers map[string]ProviderUsage `json:"providers"`
	Total     ProviderUsage            `json:"total"`
}

// ProviderUsage is one user's use of one provider.
type ProviderUsage struct {
	Requests         int64   `json:"requests"`
	PromptTokens     int64   `json:"promptTokens"`
	CompletionTokens int64   `json:"completionTokens"`
	CostUSD          float64 `json:"costUsd"`
}

// userUsage reads a user's usage for the UTC day of t.
func (l *ledger) userUsage(ctx context.Context, userID string, t time.Time) (UserUsage, error) {
	day := t.UTC().Format("20060102")
	out := UserUsage{Day: t.UTC().Format(time.DateOnly), Providers: map[string]ProviderUsage{}}
	if l.redis.rdb == nil {
		return out, nil // no Redis configured: nothing was recorded
	}
	rdb := l.redis.client()
	if rdb == nil {
		return out, errors.New("redis is not reachable")
	}
	ctx, cancel := l.redis.ctx(ctx)
	defer cancel()
	m, err := rdb.HGetAll(ctx, l.usageKey(userID, day)).Result()
	if err != nil {
		l.redis.check(err)
		return out, err
	}
	for _, name := range Names {
		pre := name + "."
		if _, ok := m[pre+"requests"]; !ok {
			continue
		}
		var u ProviderUsage
		u.Requests, _ = strconv.ParseInt(m[pre+"requests"], 10, 64)
		u.PromptTokens, _ = strconv.ParseInt(m[pre+"promptTokens"], 10, 64)
		u.CompletionTokens, _ = strconv.ParseInt(m[pre+"completionTokens"], 10, 64)
		u.CostUSD, _ = strconv.ParseFloat(m[pre+"costUsd"], 64)
		out.Providers[name] = u
		out.Total.Requests += u.Requests
		out.Total.PromptTokens += u.PromptTokens
		out.Total.CompletionTokens += u.CompletionTokens
		out.Total.CostUSD += u.CostUSD
	}
	return out, nil
}
