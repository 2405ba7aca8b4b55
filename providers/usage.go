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
// Quotas are exact across processes: a call reserves its request with INCR
// before it is made and gives it back (DECR) if it is refused, over quota
// or rate limited; tokens are added once the answer tells how many. Keys
// are named by UTC day and expire after 24 h.
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

// reserve takes one request of the provider's daily quota, refusing when
// the requests or tokens of today are spent. The returned release gives
// the request back. When Redis fails the call goes ahead: a quota is a
// budget, and losing the count for a moment is better than losing AI.
func (l *ledger) reserve(ctx context.Context, provider string, cfg ProviderConfig) (release func(), err error) {
	noop := func() {}
	rdb := l.redis.client()
	if rdb == nil {
		return noop, nil
	}
	day := l.day()
	reqKey, tokKey := l.quotaKey(provider, day, "requests"), l.quotaKey(provider, day, "tokens")
	var n *goredis.IntCmd
	var tok *goredis.StringCmd
	_, err = rdb.Pipelined(ctx, func(p goredis.Pipeliner) error {
		n = p.Incr(ctx, reqKey)
		p.Expire(ctx, reqKey, dayTTL)
		tok = p.Get(ctx, tokKey)
		return nil
	})
	if l.redis.check(err); err != nil && !errors.Is(err, goredis.Nil) {
		return noop, nil
	}
	release = func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		l.redis.check(rdb.Decr(rctx, reqKey).Err())
	}
	tokens, _ := strconv.ParseInt(tok.Val(), 10, 64)
	if (cfg.DailyRequests > 0 && n.Val() > cfg.DailyRequests) || (cfg.DailyTokens > 0 && tokens >= cfg.DailyTokens) {
		release()
		return noop, errOverQuota
	}
	return release, nil
}

// outcome is what one call did, for the ledger.
type outcome struct {
	provider string
	userID   string
	failed   bool
	latency  time.Duration
	usage    Usage
}

// record adds a call's figures in one round trip. It runs after the call,
// on a context of its own, so a caller's deadline never loses the count.
func (l *ledger) record(ctx context.Context, o outcome) {
	rdb := l.redis.client()
	if rdb == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	day := l.day()
	stats := l.statsKey(o.provider, day)
	_, err := rdb.Pipelined(ctx, func(p goredis.Pipeliner) error {
		p.HIncrBy(ctx, stats, "calls", 1)
		if o.failed {
			p.HIncrBy(ctx, stats, "failures", 1)
		}
		p.Expire(ctx, stats, dayTTL)
		if o.failed {
			return nil
		}
		lat := l.latencyKey(o.provider)
		p.LPush(ctx, lat, o.latency.Milliseconds())
		p.LTrim(ctx, lat, 0, int64(l.window-1))
		p.Expire(ctx, lat, dayTTL)
		if total := int64(o.usage.PromptTokens + o.usage.CompletionTokens); total > 0 {
			tok := l.quotaKey(o.provider, day, "tokens")
			p.IncrBy(ctx, tok, total)
			p.Expire(ctx, tok, dayTTL)
		}
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
	m, err := rdb.HGetAll(ctx, l.usageKey(userID, day)).Result()
	if err != nil {
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
