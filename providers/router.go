package providers

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v5"
	goredis "github.com/redis/go-redis/v9"
)

// Request is one AI call as an AI_PROCESSOR node makes it.
type Request struct {
	// TaskType picks the route (primary and backup provider).
	TaskType string
	// Prompt is the user message; for sentiment_analysis, the text to classify.
	Prompt string
	// System is an optional system message.
	System string
	// Temperature, when set, is passed on; nil leaves the provider's default.
	Temperature *float64
	// MaxTokens caps the answer; zero leaves the provider's default.
	MaxTokens int
	// Provider pins one provider, used alone: no backup.
	Provider string
	// UserID is whose usage and cost the call is recorded under.
	UserID string
	// Cache answers an identical request of the same user from Redis within
	// Config.CacheTTL, and stores a fresh answer for the next one.
	Cache bool
	// OnToken, when set, streams the answer: it is called with each delta,
	// in order, as the provider sends it. A sentiment answer (a label) is
	// delivered in one call, as is a cached answer.
	OnToken func(token string)
}

// Usage is what a call consumed and its estimated cost in US dollars.
type Usage struct {
	PromptTokens     int     `json:"promptTokens"`
	CompletionTokens int     `json:"completionTokens"`
	TotalTokens      int     `json:"totalTokens"`
	CostUSD          float64 `json:"costUsd"`
}

// Result is an answer.
type Result struct {
	Text     string `json:"text"`
	Provider string `json:"provider"`
	Model    string `json:"model"`
	// Fallback reports that the backup answered, not the route's primary.
	Fallback bool  `json:"fallback"`
	Usage    Usage `json:"usage"`
	// LatencyMs is how long the request took, retries and fallback included.
	LatencyMs float64 `json:"latencyMs"`
	// Label (positive, negative, neutral) and Score (confidence, 0 to 1)
	// are set for sentiment_analysis; Text is then the label too.
	Label string   `json:"label,omitempty"`
	Score *float64 `json:"score,omitempty"`
	// Cached reports an answer from the cache: no provider was called, and
	// Usage is zero.
	Cached bool `json:"cached,omitempty"`
	// Attempts are the failures met before the answer.
	Attempts []AttemptError `json:"attempts,omitempty"`
}

// Output is the result as an AI_PROCESSOR node's output:
// {"text","provider","model","fallback","usage":{...},"latencyMs"} and, as
// they apply, "label", "score", "cached", "attempts".
func (r *Result) Output() map[string]any {
	out := map[string]any{
		"text":     r.Text,
		"provider": r.Provider,
		"model":    r.Model,
		"fallback": r.Fallback,
		"usage": map[string]any{
			"promptTokens":     r.Usage.PromptTokens,
			"completionTokens": r.Usage.CompletionTokens,
			"totalTokens":      r.Usage.TotalTokens,
			"costUsd":          r.Usage.CostUSD,
		},
		"latencyMs": r.LatencyMs,
	}
	if r.Label != "" {
		out["label"] = r.Label
	}
	if r.Score != nil {
		out["score"] = *r.Score
	}
	if r.Cached {
		out["cached"] = true
	}
	if len(r.Attempts) > 0 {
		list := make([]any, len(r.Attempts))
		for i, a := range r.Attempts {
			m := map[string]any{"provider": a.Provider, "kind": string(a.Kind), "message": a.Message}
			if a.Status != 0 {
				m["status"] = a.Status
			}
			list[i] = m
		}
		out["attempts"] = list
	}
	return out
}

// Options are the router's collaborators.
type Options struct {
	// Redis shares circuit state, quotas, figures, usage and the cache
	// between processes. Nil keeps circuit state per process and turns
	// quotas, figures, usage and the cache off: for tests and one-off tools.
	Redis goredis.UniversalClient
	// Logger receives warnings; nil discards them.
	Logger *slog.Logger
	// Transport sends the HTTP requests; nil means a clone of
	// http.DefaultTransport.
	Transport http.RoundTripper
	// Now is the clock for figures and quotas; nil means time.Now.
	Now func() time.Time
}

// Router sends each request to the provider its task type routes to,
// retries what may pass, falls back to the backup, and keeps health,
// quotas and usage. It is safe for concurrent use.
type Router struct {
	cfg       Config
	log       *slog.Logger
	redis     *redisGate
	now       func() time.Time
	providers map[string]*provider
	ledger    *ledger
	transport http.RoundTripper
	secrets   []string
}

type provider struct {
	name       string
	cfg        ProviderConfig
	configured bool
	be         backend
	br         *breaker
}

// New builds a router. cfg's zero fields take their defaults; cfg must
// pass Validate.
func New(cfg Config, opts Options) (*Router, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	r := &Router{cfg: cfg, log: opts.Logger, now: opts.Now, providers: map[string]*provider{}}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	if r.now == nil {
		r.now = time.Now
	}
	base := opts.Transport
	if base == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.Proxy = nil // keys must not travel through a proxy the environment happens to name
		t.MaxIdleConnsPerHost = 16
		t.ResponseHeaderTimeout = cfg.AttemptTimeout
		base = t
	}
	r.transport = base
	r.redis = &redisGate{rdb: opts.Redis, now: r.now}
	hc := &http.Client{Transport: &metaTransport{base: base, now: r.now, maxBody: cfg.MaxAnswerBytes}}
	r.ledger = &ledger{redis: r.redis, prefix: cfg.KeyPrefix, window: cfg.LatencyWindow, retention: cfg.UsageRetention, now: r.now}
	for _, name := range Names {
		pc, ok := cfg.Providers[name]
		p := &provider{name: name, cfg: pc, configured: ok && pc.APIKey != ""}
		if !ok {
			p.cfg = DefaultProviders()[name]
		}
		if p.configured {
			if len(pc.APIKey) >= 4 {
				r.secrets = append(r.secrets, string(pc.APIKey))
			}
			chat := newChatBackend(pc.BaseURL, pc.Model, pc.APIKey, hc, cfg.MaxAnswerBytes)
			if name == HuggingFace {
				p.be = &hfBackend{chat: newChatBackend(pc.ChatBaseURL, pc.ChatModel, pc.APIKey, hc, cfg.MaxAnswerBytes),
					baseURL: strings.TrimRight(pc.BaseURL, "/"), model: pc.Model, key: pc.APIKey, hc: hc, redact: r.redact}
			} else {
				p.be = chat
			}
		}
		p.br = newBreaker(name, cfg.Breaker, cfg.AttemptTimeout+5*time.Second, r.redis, cfg.KeyPrefix, r.now)
		r.providers[name] = p
	}
	return r, nil
}

// Close releases idle connections.
func (r *Router) Close() {
	if t, ok := r.transport.(interface{ CloseIdleConnections() }); ok {
		t.CloseIdleConnections()
	}
}

// redact removes every configured key from a provider's message, in case
// one echoes it back.
func (r *Router) redact(s string) string {
	for _, k := range r.secrets {
		s = strings.ReplaceAll(s, k, "[redacted]")
	}
	return s
}

// Complete answers req: from the cache when asked and present, else from
// the route's primary, retried with backoff and jitter (honouring
// Retry-After) while the failure may pass, then from the backup. Providers
// without a key, with an open circuit or over quota are skipped. All of it
// happens within ctx's deadline; when there is a backup to try, the
// primary gets at most half of the time left, so the backup always has a
// chance.
//
// Errors are *Error with a Code: ai_bad_request when the request itself is
// refused (no fallback), ai_not_configured, ai_quota_exceeded,
// ai_unavailable (retryable) when primary and backup both failed,
// ai_stream_interrupted, ai_timeout; or ctx's error when it was cancelled.
func (r *Router) Complete(ctx context.Context, req Request) (*Result, error) {
	start := time.Now()
	if strings.TrimSpace(req.Prompt) == "" {
		return nil, &Error{Code: CodeBadRequest, Message: "the prompt is empty"}
	}
	var candidates []*provider
	if req.Provider != "" {
		p, ok := r.providers[req.Provider]
		if !ok {
			return nil, &Error{Code: CodeBadRequest, Message: fmt.Sprintf("unknown provider %q; known: %s", req.Provider, strings.Join(Names, ", "))}
		}
		if req.TaskType != "" && !slices.Contains(TaskTypes, req.TaskType) {
			return nil, &Error{Code: CodeBadRequest, Message: fmt.Sprintf("unknown task type %q", req.TaskType)}
		}
		candidates = []*provider{p}
	} else {
		route, ok := r.cfg.Routes[req.TaskType]
		if !ok {
			return nil, &Error{Code: CodeBadRequest, Message: fmt.Sprintf("no route for task type %q", req.TaskType)}
		}
		candidates = append(candidates, r.providers[route.Primary])
		if b := r.providers[route.Backup]; b != nil {
			candidates = append(candidates, b)
		}
	}

	cacheKey := ""
	if req.Cache && r.redis.rdb != nil {
		cacheKey = r.cacheKey(req)
		if res := r.cached(ctx, cacheKey); res != nil {
			res.Cached, res.Usage, res.Attempts = true, Usage{}, nil
			res.LatencyMs = ms(time.Since(start))
			if req.OnToken != nil {
				req.OnToken(res.Text)
			}
			return res, nil
		}
	}

	var attempts []AttemptError
	for i, p := range candidates {
		if !p.configured {
			attempts = append(attempts, AttemptError{Provider: p.name, Kind: KindNotConfigured, Message: "no API key is set"})
			continue
		}
		phase, cancel := ctx, context.CancelFunc(func() {})
		if slices.ContainsFunc(candidates[i+1:], func(q *provider) bool { return q.configured }) {
			if dl, ok := ctx.Deadline(); ok {
				phase, cancel = context.WithDeadline(ctx, time.Now().Add(time.Until(dl)/2))
			}
		}
		res, ce := r.tryProvider(ctx, phase, p, req)
		cancel()
		if ce == nil {
			res.Fallback = i > 0
			res.Attempts = attempts
			res.LatencyMs = ms(time.Since(start))
			if cacheKey != "" {
				r.store(ctx, cacheKey, res)
			}
			return res, nil
		}
		attempts = append(attempts, AttemptError{Provider: p.name, Kind: ce.kind, Status: ce.status, Message: ce.msg})
		if ctx.Err() != nil {
			break
		}
		switch {
		case ce.kind == KindBadRequest:
			return nil, &Error{Code: CodeBadRequest, Message: p.name + " refused the request: " + ce.msg, Attempts: attempts}
		case ce.emitted:
			return nil, &Error{Code: CodeStreamInterrupted, Message: p.name + " stopped mid-answer: " + ce.msg, Retryable: true, Attempts: attempts}
		}
		r.log.Warn("AI provider failed", "provider", p.name, "kind", ce.kind, "status", ce.status, "message", ce.msg)
	}
	return nil, r.failure(ctx, req, attempts)
}

// failure sums up why no provider answered.
func (r *Router) failure(ctx context.Context, req Request, attempts []AttemptError) error {
	if err := ctx.Err(); errors.Is(err, context.Canceled) {
		return fmt.Errorf("AI request cancelled: %w", err)
	} else if err != nil {
		return &Error{Code: CodeTimeout, Message: "no provider answered before the deadline: " + summary(attempts), Retryable: true, Attempts: attempts}
	}
	kinds := map[Kind]int{}
	var wait time.Duration
	for _, a := range attempts {
		kinds[a.Kind]++
	}
	switch {
	case kinds[KindNotConfigured] == len(attempts):
		var envs []string
		for _, a := range attempts {
			envs = append(envs, envNames[a.Provider].key)
		}
		what := "task type " + req.TaskType
		if req.Provider != "" {
			what = "provider " + req.Provider
		}
		return &Error{Code: CodeNotConfigured, Message: fmt.Sprintf("no AI provider is configured for %s: set %s", what, strings.Join(slices.Compact(envs), " or ")), Attempts: attempts}
	case kinds[KindNotConfigured]+kinds[KindQuota] == len(attempts):
		return &Error{Code: CodeQuotaExceeded, Message: "the daily quota is spent: " + summary(attempts), Attempts: attempts}
	}
	if kinds[KindCircuitOpen] > 0 {
		wait = r.cfg.Breaker.OpenFor
	}
	return &Error{Code: CodeUnavailable, Message: "no AI provider could answer: " + summary(attempts), Retryable: true, RetryAfter: wait, Attempts: attempts}
}

func summary(attempts []AttemptError) string {
	parts := make([]string, 0, len(attempts))
	for _, a := range attempts {
		parts = append(parts, a.Provider+": "+a.Message)
	}
	return strings.Join(parts, "; ")
}

// tryProvider asks one provider, retrying what may pass within phase.
func (r *Router) tryProvider(ctx, phase context.Context, p *provider, req Request) (*Result, *callError) {
	c := call{system: req.System, prompt: req.Prompt, temperature: req.Temperature, maxTokens: req.MaxTokens, onToken: req.OnToken}
	sentiment := req.TaskType == TaskSentiment
	if sentiment {
		c.onToken = nil
		if p.name == HuggingFace {
			c.classify = true
		} else {
			c.system = sentimentSystem
			if req.System != "" {
				c.system += "\n\n" + req.System
			}
		}
	}
	b := &backoff.ExponentialBackOff{
		InitialInterval:     r.cfg.RetryInitial,
		RandomizationFactor: 0.5,
		Multiplier:          2,
		MaxInterval:         r.cfg.RetryMax,
	}
	b.Reset()
	var last *callError
	for n := 1; ; n++ {
		res, ce := r.attempt(ctx, phase, p, c, req.UserID, sentiment)
		if ce == nil {
			if sentiment && req.OnToken != nil {
				req.OnToken(res.Text)
			}
			return res, nil
		}
		last = ce
		if !ce.retryable() || n >= r.cfg.MaxAttempts || phase.Err() != nil {
			return nil, last
		}
		wait := b.NextBackOff()
		if ce.retryAfter > 0 {
			if ce.retryAfter > r.cfg.MaxRetryAfter {
				return nil, last // not worth the wait: the backup may answer now
			}
			wait = max(wait, ce.retryAfter)
		}
		if dl, ok := phase.Deadline(); ok && time.Until(dl) < wait {
			return nil, last
		}
		t := time.NewTimer(wait)
		select {
		case <-phase.Done():
			t.Stop()
			return nil, last
		case <-t.C:
		}
	}
}

// errAttemptTimeout is the cause of an attempt's own timeout.
var errAttemptTimeout = errors.New("the attempt timed out")

// attempt makes one call: through the circuit breaker and the quota, with
// its own timeout, recorded in the ledger.
func (r *Router) attempt(ctx, phase context.Context, p *provider, c call, userID string, sentiment bool) (*Result, *callError) {
	if phase.Err() != nil {
		// No time is left: nothing is asked, reserved or counted.
		return nil, &callError{kind: KindTimeout, msg: "no time was left to ask it"}
	}
	done, err := p.br.allow(phase)
	if err != nil {
		return nil, &callError{kind: KindCircuitOpen, msg: "skipped: its circuit is open after recent failures"}
	}
	h, err := r.ledger.reserve(phase, p.name, p.cfg, tokenEstimate(c))
	if err != nil {
		done(context.Canceled)
		return nil, &callError{kind: KindQuota, msg: "skipped: its daily quota is spent"}
	}
	actx, cancel := context.WithTimeoutCause(phase, r.cfg.AttemptTimeout, errAttemptTimeout)
	defer cancel()
	actx, m := withMeta(actx)
	t0 := time.Now()
	rep, err := p.be.do(actx, c)
	latency := time.Since(t0)

	var ce *callError
	res := &Result{Provider: p.name, Model: p.cfg.Model, Text: rep.text}
	if p.name == HuggingFace && !c.classify {
		res.Model = p.cfg.ChatModel
	}
	if err != nil {
		ce = classify(actx, err, m.get(), r.redact)
	} else if sentiment {
		var label string
		var score float64
		ok := false
		if c.classify {
			label, score, ok = NormaliseScores(rep.scores)
		} else {
			label, score, ok = ParseSentimentText(rep.text)
		}
		if !ok {
			ce = &callError{kind: KindMalformed, msg: "the answer is not a sentiment: " + snippet([]byte(r.redact(rep.text)))}
		} else {
			res.Text, res.Label, res.Score = label, label, &score
		}
	} else if strings.TrimSpace(rep.text) == "" {
		ce = &callError{kind: KindMalformed, msg: "the answer is empty"}
	}

	switch {
	case ce == nil:
		done(nil)
	case actx.Err() != nil && !errors.Is(context.Cause(actx), errAttemptTimeout):
		// The caller left or ran out of time, or the primary's share of it
		// ran out: that says nothing of the provider. Only the attempt's own
		// timeout does.
		done(context.Canceled)
	case ce.breakerFailure():
		done(ce)
	default:
		done(nil)
	}
	if ce != nil {
		switch ce.kind {
		case KindRateLimited, KindBadRequest, KindAuth:
			r.ledger.release(ctx, h) // refused, so not spent
		}
		r.ledger.record(ctx, outcome{provider: p.name, userID: userID, failed: true, latency: latency, hold: h})
		return nil, ce
	}
	res.Usage = Usage{PromptTokens: rep.promptTokens, CompletionTokens: rep.completionTokens}
	res.Usage.TotalTokens = res.Usage.PromptTokens + res.Usage.CompletionTokens
	res.Usage.CostUSD = roundCost(p.cfg.Price.Cost(res.Usage.PromptTokens, res.Usage.CompletionTokens))
	r.ledger.record(ctx, outcome{provider: p.name, userID: userID, latency: latency, usage: res.Usage, hold: h})
	return res, nil
}

func roundCost(f float64) float64 { return math.Round(f*1e9) / 1e9 }

func ms(d time.Duration) float64 { return math.Round(float64(d)/1e5) / 10 }

// cacheKey names an answer by everything that shapes it, under the user:
// one user's prompt, and the answer to it, never reach another.
func (r *Router) cacheKey(req Request) string {
	raw, _ := json.Marshal([]any{req.UserID, req.TaskType, req.Provider, req.System, req.Prompt, req.Temperature, req.MaxTokens})
	sum := sha256.Sum256(raw)
	return r.cfg.KeyPrefix + "ai:cache:" + hex.EncodeToString(sum[:])
}

func (r *Router) cached(ctx context.Context, key string) *Result {
	rdb := r.redis.client()
	if rdb == nil {
		return nil
	}
	ctx, cancel := r.redis.ctx(ctx)
	defer cancel()
	raw, err := rdb.Get(ctx, key).Bytes()
	if r.redis.check(err); err != nil {
		return nil
	}
	var res Result
	if json.Unmarshal(raw, &res) != nil || res.Provider == "" {
		return nil
	}
	return &res
}

func (r *Router) store(ctx context.Context, key string, res *Result) {
	raw, err := json.Marshal(res)
	if err != nil {
		return
	}
	rdb := r.redis.client()
	if rdb == nil {
		return
	}
	ctx, cancel := r.redis.ctx(ctx)
	defer cancel()
	if err := rdb.Set(ctx, key, raw, r.cfg.CacheTTL).Err(); err != nil {
		r.redis.check(err)
		r.log.Warn("AI cache write failed", "error", err)
	}
}

// Status is what GET /api/dashboard/ai-status answers.
type Status struct {
	Providers []ProviderStatus `json:"providers"`
	Routes    []RouteStatus    `json:"routes"`
}

// ProviderStatus is one provider's health and use today (UTC), summed over
// every process sharing the Redis.
type ProviderStatus struct {
	Name       string `json:"name"`
	Model      string `json:"model"`
	Configured bool   `json:"configured"`
	// Healthy: configured and its circuit closed.
	Healthy bool `json:"healthy"`
	// Circuit is closed, open or half-open.
	Circuit  string  `json:"circuit"`
	Calls    int64   `json:"calls"`
	Failures int64   `json:"failures"`
	P50Ms    float64 `json:"p50Ms"`
	Quota    Quota   `json:"quota"`
}

// Quota is a provider's requests today against its daily limit (0: none),
// and the same for tokens.
type Quota struct {
	Used        int64 `json:"used"`
	Limit       int64 `json:"limit"`
	TokensUsed  int64 `json:"tokensUsed"`
	TokensLimit int64 `json:"tokensLimit"`
}

// RouteStatus is one row of the routing table.
type RouteStatus struct {
	TaskType string `json:"taskType"`
	Primary  string `json:"primary"`
	Backup   string `json:"backup"`
}

// Status reports every provider and route for the dashboard. Figures come
// from Redis in one round trip; if Redis fails they read zero.
func (r *Router) Status(ctx context.Context) Status {
	figs := r.ledger.figures(ctx, Names)
	st := Status{Providers: make([]ProviderStatus, 0, len(Names))}
	for _, name := range Names {
		p := r.providers[name]
		f := figs[name]
		circuit := p.br.state(ctx)
		model := p.cfg.Model
		st.Providers = append(st.Providers, ProviderStatus{
			Name: name, Model: model, Configured: p.configured,
			Healthy: p.configured && circuit == CircuitClosed, Circuit: circuit,
			Calls: f.calls, Failures: f.failures, P50Ms: f.p50Ms,
			Quota: Quota{Used: f.requests, Limit: p.cfg.DailyRequests, TokensUsed: f.tokens, TokensLimit: p.cfg.DailyTokens},
		})
	}
	tasks := slices.Clone(TaskTypes)
	for _, t := range sortedNames(r.cfg.Routes) {
		if !slices.Contains(tasks, t) {
			tasks = append(tasks, t)
		}
	}
	for _, t := range tasks {
		if rt, ok := r.cfg.Routes[t]; ok {
			st.Routes = append(st.Routes, RouteStatus{TaskType: t, Primary: rt.Primary, Backup: rt.Backup})
		}
	}
	return st
}

// UserUsage reports a user's AI use on the UTC day of day, per provider and
// in total.
func (r *Router) UserUsage(ctx context.Context, userID string, day time.Time) (UserUsage, error) {
	return r.ledger.userUsage(ctx, userID, day)
}

// TestReport is what POST /api/dashboard/test-ai answers.
type TestReport struct {
	Providers []TestResult `json:"providers"`
}

// TestResult is one provider's answer to the test prompt.
type TestResult struct {
	Name       string        `json:"name"`
	Model      string        `json:"model"`
	Configured bool          `json:"configured"`
	OK         bool          `json:"ok"`
	LatencyMs  float64       `json:"latencyMs"`
	Text       string        `json:"text,omitempty"`
	Error      *AttemptError `json:"error,omitempty"`
}

// testTimeout bounds one provider's test.
const testTimeout = 20 * time.Second

// TestAll sends a tiny prompt to every configured provider at once (a
// short text to classify, for huggingface) and reports each answer. It goes
// around circuits and quotas, since its point is to see a provider's
// answer now, but the calls count in the figures like any other.
func (r *Router) TestAll(ctx context.Context) TestReport {
	rep := TestReport{Providers: make([]TestResult, len(Names))}
	var wg sync.WaitGroup
	for i, name := range Names {
		p := r.providers[name]
		rep.Providers[i] = TestResult{Name: name, Model: p.cfg.Model, Configured: p.configured}
		if !p.configured {
			rep.Providers[i].Error = &AttemptError{Provider: name, Kind: KindNotConfigured, Message: "no API key is set: set " + envNames[name].key}
			continue
		}
		wg.Go(func() {
			res := &rep.Providers[i]
			c := call{prompt: defaultTestPrompt, maxTokens: 16}
			if name == HuggingFace {
				c = call{prompt: defaultTestSentence, classify: true}
			}
			tctx, cancel := context.WithTimeout(ctx, testTimeout)
			defer cancel()
			tctx, m := withMeta(tctx)
			t0 := time.Now()
			out, err := p.be.do(tctx, c)
			latency := time.Since(t0)
			res.LatencyMs = ms(latency)
			o := outcome{provider: name, latency: latency, failed: err != nil}
			if err != nil {
				ce := classify(tctx, err, m.get(), r.redact)
				res.Error = &AttemptError{Provider: name, Kind: ce.kind, Status: ce.status, Message: ce.msg}
			} else {
				res.OK, res.Text = true, out.text
				if c.classify {
					if label, _, ok := NormaliseScores(out.scores); ok {
						res.Text = label
					} else {
						res.OK = false
						res.Error = &AttemptError{Provider: name, Kind: KindMalformed, Message: "the classification labels are not sentiments"}
					}
				}
				o.usage = Usage{PromptTokens: out.promptTokens, CompletionTokens: out.completionTokens}
			}
			r.ledger.record(ctx, o)
		})
	}
	wg.Wait()
	return rep
}
