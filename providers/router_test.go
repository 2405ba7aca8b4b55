package providers

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	weftredis "github.com/weftdev/weft/persistence/redis"
)

func requireCode(t *testing.T, err error, code string) *Error {
	t.Helper()
	var e *Error
	require.ErrorAs(t, err, &e)
	require.Equal(t, code, e.Code, e.Message)
	return e
}

func TestPrimaryAnswers(t *testing.T) {
	t.Parallel()
	b := setup(t)
	temp := 0.0
	res, err := b.router.Complete(ctxTimeout(t, 10*time.Second), Request{TaskType: TaskContentGeneration, Prompt: "hi", System: "be brief", Temperature: &temp, MaxTokens: 50, UserID: "u1"})
	require.NoError(t, err)
	require.Equal(t, "hello from fake", res.Text)
	require.Equal(t, Gemini, res.Provider)
	require.Equal(t, DefaultGeminiModel, res.Model)
	require.False(t, res.Fallback)
	require.Equal(t, Usage{PromptTokens: 7, CompletionTokens: 3, TotalTokens: 10, CostUSD: 7*0.30/1e6 + 3*2.50/1e6}, res.Usage)

	body := b.fakes[Gemini].lastBody()
	require.Equal(t, DefaultGeminiModel, body["model"])
	require.EqualValues(t, 50, body["max_tokens"])
	require.Contains(t, body, "temperature", "a zero temperature is still sent")
	msgs := body["messages"].([]any)
	require.Equal(t, "system", msgs[0].(map[string]any)["role"])
	require.Equal(t, "hi", msgs[1].(map[string]any)["content"])

	out := res.Output()
	for _, k := range []string{"text", "provider", "model", "fallback", "usage", "latencyMs"} {
		require.Contains(t, out, k)
	}
	require.NotContains(t, out, "label")
}

func TestFallback(t *testing.T) {
	t.Parallel()
	cases := []struct {
		mode      string
		kind      Kind
		wantCalls int // primary calls: retried modes are tried MaxAttempts times
	}{
		{modeDown, KindServer, 2},
		{modeGarbage, KindMalformed, 2},
		{modeAuth, KindAuth, 1},
		{modeStall, KindTimeout, 1},
	}
	for _, tc := range cases {
		t.Run(tc.mode, func(t *testing.T) {
			t.Parallel()
			b := setup(t, func(c *Config) { c.AttemptTimeout = 10 * time.Second })
			b.fakes[Gemini].set(func(f *fake) { f.mode = tc.mode })
			b.fakes[Qwen].set(func(f *fake) { f.text = "backup here" })
			// For the stall, the primary gets half of the 2 s left and the backup the rest.
			res, err := b.router.Complete(ctxTimeout(t, 2*time.Second), Request{TaskType: TaskContentGeneration, Prompt: "hi"})
			require.NoError(t, err)
			require.Equal(t, Qwen, res.Provider)
			require.Equal(t, "backup here", res.Text)
			require.True(t, res.Fallback)
			require.Len(t, res.Attempts, 1)
			require.Equal(t, tc.kind, res.Attempts[0].Kind)
			require.Equal(t, tc.wantCalls, b.fakes[Gemini].count())
			require.NotContains(t, res.Attempts[0].Message, "key-gemini", "keys never reach messages")
			require.Equal(t, true, res.Output()["fallback"])
		})
	}
}

func TestBothDownIsUnavailable(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.fakes[Gemini].set(func(f *fake) { f.mode = modeDown })
	b.fakes[Qwen].set(func(f *fake) { f.mode = modeGarbage })
	_, err := b.router.Complete(ctxTimeout(t, 10*time.Second), Request{TaskType: TaskContentGeneration, Prompt: "hi"})
	e := requireCode(t, err, CodeUnavailable)
	require.True(t, e.Retryable)
	require.Len(t, e.Attempts, 2)
	require.Contains(t, e.Message, "gemini")
	require.Contains(t, e.Message, "qwen")
}

func TestBadRequestDoesNotFallBack(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.fakes[Gemini].set(func(f *fake) { f.mode = modeBad })
	_, err := b.router.Complete(ctxTimeout(t, 10*time.Second), Request{TaskType: TaskContentGeneration, Prompt: "hi"})
	e := requireCode(t, err, CodeBadRequest)
	require.False(t, e.Retryable)
	require.Contains(t, e.Message, "context length exceeded")
	require.Equal(t, 1, b.fakes[Gemini].count(), "not retried")
	require.Zero(t, b.fakes[Qwen].count(), "no fallback")
}

func TestRateLimitHonoursRetryAfter(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.fakes[Gemini].set(func(f *fake) { f.modeAfter = map[int]string{1: modeLimited}; f.retryAfter = "1" })
	start := time.Now()
	res, err := b.router.Complete(ctxTimeout(t, 10*time.Second), Request{TaskType: TaskContentGeneration, Prompt: "hi"})
	require.NoError(t, err)
	require.Equal(t, Gemini, res.Provider, "the primary answered once its wait was over")
	require.False(t, res.Fallback)
	require.GreaterOrEqual(t, time.Since(start), time.Second)
	require.Equal(t, 2, b.fakes[Gemini].count())
}

func TestLongRetryAfterGoesToBackup(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.fakes[Gemini].set(func(f *fake) { f.mode = modeLimited; f.retryAfter = "120" })
	start := time.Now()
	res, err := b.router.Complete(ctxTimeout(t, 10*time.Second), Request{TaskType: TaskContentGeneration, Prompt: "hi"})
	require.NoError(t, err)
	require.Equal(t, Qwen, res.Provider)
	require.Equal(t, KindRateLimited, res.Attempts[0].Kind)
	require.Less(t, time.Since(start), 2*time.Second)
	require.Equal(t, 1, b.fakes[Gemini].count())
}

func TestRetriesStayInsideTheDeadline(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *Config) {
		c.MaxAttempts = 100
		c.RetryInitial = 50 * time.Millisecond
		c.RetryMax = 100 * time.Millisecond
	})
	b.fakes[Gemini].set(func(f *fake) { f.mode = modeDown })
	b.fakes[Qwen].set(func(f *fake) { f.mode = modeDown })
	start := time.Now()
	_, err := b.router.Complete(ctxTimeout(t, 800*time.Millisecond), Request{TaskType: TaskContentGeneration, Prompt: "hi"})
	require.Error(t, err)
	require.Less(t, time.Since(start), time.Second)
	var e *Error
	require.ErrorAs(t, err, &e)
	require.True(t, e.Retryable)
	require.Greater(t, b.fakes[Qwen].count(), 0, "the backup had its half of the time")
}

func TestPinnedProviderIsUsedAlone(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.fakes[Groq].set(func(f *fake) { f.mode = modeDown })
	_, err := b.router.Complete(ctxTimeout(t, 10*time.Second), Request{TaskType: TaskContentGeneration, Provider: Groq, Prompt: "hi"})
	requireCode(t, err, CodeUnavailable)
	require.Zero(t, b.fakes[Gemini].count())
	require.Zero(t, b.fakes[Qwen].count())

	res, err := b.router.Complete(ctxTimeout(t, 10*time.Second), Request{TaskType: TaskContentGeneration, Provider: Kimi, Prompt: "hi"})
	require.NoError(t, err)
	require.Equal(t, Kimi, res.Provider)
	require.False(t, res.Fallback)
}

func TestNotConfigured(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *Config) {
		for _, n := range []string{Gemini, Qwen, GLM, Kimi} {
			p := c.Providers[n]
			p.APIKey = ""
			c.Providers[n] = p
		}
	})
	_, err := b.router.Complete(ctxTimeout(t, 10*time.Second), Request{TaskType: TaskContentGeneration, Prompt: "hi"})
	e := requireCode(t, err, CodeNotConfigured)
	require.False(t, e.Retryable)
	require.Contains(t, e.Message, "GEMINI_API_KEY")
	require.Contains(t, e.Message, "OPENROUTER_API_KEY")
	require.Zero(t, b.fakes[Gemini].count()+b.fakes[Qwen].count(), "a provider without a key is never called")

	// The backup's key missing: the primary answers alone.
	res, err := b.router.Complete(ctxTimeout(t, 10*time.Second), Request{TaskType: TaskQuickDecision, Prompt: "hi"})
	require.NoError(t, err)
	require.Equal(t, Groq, res.Provider)

	// The primary's key missing: the backup answers, as a fallback.
	c := setup(t, func(c *Config) {
		p := c.Providers[Gemini]
		p.APIKey = ""
		c.Providers[Gemini] = p
	})
	res, err = c.router.Complete(ctxTimeout(t, 10*time.Second), Request{TaskType: TaskContentGeneration, Prompt: "hi"})
	require.NoError(t, err)
	require.Equal(t, Qwen, res.Provider)
	require.True(t, res.Fallback)
	require.Equal(t, KindNotConfigured, res.Attempts[0].Kind)

	st := b.router.Status(context.Background())
	for _, p := range st.Providers {
		require.Equal(t, p.Name == Groq || p.Name == HuggingFace, p.Configured, p.Name)
		require.Equal(t, p.Configured, p.Healthy, p.Name)
	}
}

func TestUnknownTaskAndProvider(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, err := b.router.Complete(context.Background(), Request{TaskType: "poetry", Prompt: "hi"})
	requireCode(t, err, CodeBadRequest)
	_, err = b.router.Complete(context.Background(), Request{TaskType: TaskContentGeneration, Provider: "openai", Prompt: "hi"})
	requireCode(t, err, CodeBadRequest)
	_, err = b.router.Complete(context.Background(), Request{TaskType: TaskContentGeneration, Prompt: "  "})
	requireCode(t, err, CodeBadRequest)
}

func TestQuotaExhaustedGoesToBackup(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *Config) {
		p := c.Providers[Gemini]
		p.DailyRequests = 2
		c.Providers[Gemini] = p
	})
	other := b.newRouter(t) // another process: the quota is shared
	for i, r := range []*Router{b.router, other} {
		res, err := r.Complete(ctxTimeout(t, 10*time.Second), Request{TaskType: TaskContentGeneration, Prompt: fmt.Sprint("hi ", i)})
		require.NoError(t, err)
		require.Equal(t, Gemini, res.Provider)
	}
	res, err := other.Complete(ctxTimeout(t, 10*time.Second), Request{TaskType: TaskContentGeneration, Prompt: "hi"})
	require.NoError(t, err)
	require.Equal(t, Qwen, res.Provider)
	require.True(t, res.Fallback)
	require.Equal(t, KindQuota, res.Attempts[0].Kind)
	require.Equal(t, 2, b.fakes[Gemini].count())

	st := b.router.Status(context.Background())
	g := st.Providers[0]
	require.Equal(t, Gemini, g.Name)
	require.Equal(t, Quota{Used: 2, Limit: 2, TokensUsed: 20}, g.Quota, "the refused reservation was given back")

	// Pinned to a provider over quota, with nothing else to try.
	_, err = b.router.Complete(ctxTimeout(t, 10*time.Second), Request{TaskType: TaskContentGeneration, Provider: Gemini, Prompt: "hi"})
	requireCode(t, err, CodeQuotaExceeded)
}

func TestTokenQuota(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *Config) {
		p := c.Providers[Groq]
		p.DailyTokens = 10 // one call spends 10
		c.Providers[Groq] = p
	})
	res, err := b.router.Complete(ctxTimeout(t, 10*time.Second), Request{TaskType: TaskQuickDecision, Prompt: "a"})
	require.NoError(t, err)
	require.Equal(t, Groq, res.Provider)
	res, err = b.router.Complete(ctxTimeout(t, 10*time.Second), Request{TaskType: TaskQuickDecision, Prompt: "b"})
	require.NoError(t, err)
	require.Equal(t, Gemini, res.Provider)
}

func TestCircuitIsSharedAndHalfOpens(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *Config) {
		c.MaxAttempts = 1
		c.Breaker = BreakerConfig{Failures: 2, OpenFor: time.Second, StateCacheFor: 20 * time.Millisecond}
	})
	a, other := b.router, b.newRouter(t)
	req := Request{TaskType: TaskContentGeneration, Prompt: "hi"}
	b.fakes[Gemini].set(func(f *fake) { f.mode = modeDown })
	for range 2 {
		res, err := a.Complete(ctxTimeout(t, 10*time.Second), req)
		require.NoError(t, err)
		require.Equal(t, Qwen, res.Provider)
	}
	require.Equal(t, 2, b.fakes[Gemini].count())

	// The other process sees the circuit open and does not call gemini.
	require.Eventually(t, func() bool { return other.Status(context.Background()).Providers[0].Circuit == CircuitOpen }, 2*time.Second, 10*time.Millisecond)
	st := other.Status(context.Background()).Providers[0]
	require.False(t, st.Healthy)
	require.EqualValues(t, 2, st.Failures)
	res, err := other.Complete(ctxTimeout(t, 10*time.Second), req)
	require.NoError(t, err)
	require.Equal(t, Qwen, res.Provider)
	require.Equal(t, KindCircuitOpen, res.Attempts[0].Kind)
	require.Equal(t, 2, b.fakes[Gemini].count(), "an open circuit is not called")

	// After OpenFor, half-open: one probe goes through and closes it for all.
	b.fakes[Gemini].set(func(f *fake) { f.mode = modeOK })
	require.Eventually(t, func() bool { return other.Status(context.Background()).Providers[0].Circuit == CircuitHalfOpen }, 5*time.Second, 20*time.Millisecond)
	res, err = other.Complete(ctxTimeout(t, 10*time.Second), req)
	require.NoError(t, err)
	require.Equal(t, Gemini, res.Provider)
	require.False(t, res.Fallback)
	require.Equal(t, CircuitClosed, other.Status(context.Background()).Providers[0].Circuit)
	require.Eventually(t, func() bool {
		res, err := a.Complete(ctxTimeout(t, 10*time.Second), req)
		return err == nil && res.Provider == Gemini
	}, 5*time.Second, 50*time.Millisecond)
	require.Equal(t, CircuitClosed, a.Status(context.Background()).Providers[0].Circuit)
}

func TestHalfOpenLetsOneProbeThrough(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *Config) {
		c.MaxAttempts = 1
		c.Breaker = BreakerConfig{Failures: 1, OpenFor: time.Second, StateCacheFor: 10 * time.Millisecond}
	})
	req := Request{TaskType: TaskContentGeneration, Prompt: "hi"}
	b.fakes[Gemini].set(func(f *fake) { f.mode = modeDown })
	_, err := b.router.Complete(ctxTimeout(t, 10*time.Second), req)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return b.router.Status(context.Background()).Providers[0].Circuit == CircuitHalfOpen }, 5*time.Second, 20*time.Millisecond)

	// Many processes at once: exactly one probes the stalled provider, and
	// its own attempt timeout (not the caller's deadline) fails it.
	b.fakes[Gemini].set(func(f *fake) { f.mode = modeStall })
	b.cfg.AttemptTimeout = 300 * time.Millisecond
	var wg sync.WaitGroup
	for range 5 {
		r := b.newRouter(t)
		wg.Go(func() {
			res, err := r.Complete(ctxTimeout(t, 2*time.Second), req)
			if err == nil {
				require.Equal(t, Qwen, res.Provider)
			}
		})
	}
	wg.Wait()
	require.Equal(t, 2, b.fakes[Gemini].count(), "one failure, then one probe")
	require.Equal(t, CircuitOpen, b.router.Status(context.Background()).Providers[0].Circuit, "a failed probe opens it again")
}

func TestBadRequestsDoNotOpenTheCircuit(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *Config) { c.Breaker.Failures = 2 })
	b.fakes[Gemini].set(func(f *fake) { f.mode = modeBad })
	for range 4 {
		_, err := b.router.Complete(ctxTimeout(t, 10*time.Second), Request{TaskType: TaskContentGeneration, Prompt: "hi"})
		requireCode(t, err, CodeBadRequest)
	}
	require.Equal(t, CircuitClosed, b.router.Status(context.Background()).Providers[0].Circuit)
}

func TestStreamingDeltasArriveInOrder(t *testing.T) {
	t.Parallel()
	b := setup(t)
	want := []string{"Hel", "lo", ", ", "wor", "ld", "!"}
	b.fakes[Gemini].set(func(f *fake) { f.deltas = want })
	var got []string
	res, err := b.router.Complete(ctxTimeout(t, 10*time.Second), Request{TaskType: TaskContentGeneration, Prompt: "hi",
		OnToken: func(s string) { got = append(got, s) }})
	require.NoError(t, err)
	require.Equal(t, want, got)
	require.Equal(t, "Hello, world!", res.Text)
	require.Equal(t, 4, res.Usage.PromptTokens)
	require.Equal(t, 3, res.Usage.CompletionTokens)
	require.Equal(t, true, b.fakes[Gemini].lastBody()["stream"])
}

func TestStreamingFallsBackBeforeTheFirstToken(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.fakes[Gemini].set(func(f *fake) { f.mode = modeDown })
	b.fakes[Qwen].set(func(f *fake) { f.deltas = []string{"a", "b"} })
	var got []string
	res, err := b.router.Complete(ctxTimeout(t, 10*time.Second), Request{TaskType: TaskContentGeneration, Prompt: "hi",
		OnToken: func(s string) { got = append(got, s) }})
	require.NoError(t, err)
	require.True(t, res.Fallback)
	require.Equal(t, []string{"a", "b"}, got)
}

func TestSentimentThroughHuggingFace(t *testing.T) {
	t.Parallel()
	b := setup(t)
	var streamed []string
	res, err := b.router.Complete(ctxTimeout(t, 10*time.Second), Request{TaskType: TaskSentiment, Prompt: "I love it", OnToken: func(s string) { streamed = append(streamed, s) }})
	require.NoError(t, err)
	require.Equal(t, HuggingFace, res.Provider)
	require.Equal(t, DefaultHFModel, res.Model)
	require.Equal(t, Positive, res.Label)
	require.Equal(t, Positive, res.Text)
	require.InDelta(t, 0.98, *res.Score, 1e-9)
	require.Equal(t, []string{Positive}, streamed)
	require.Equal(t, "I love it", b.fakes[HuggingFace].lastBody()["inputs"])
	out := res.Output()
	require.Equal(t, Positive, out["label"])
	require.InDelta(t, 0.98, out["score"], 1e-9)
}

func TestSentimentFallsBackToChat(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.fakes[HuggingFace].set(func(f *fake) { f.mode = modeDown })
	b.fakes[Gemini].set(func(f *fake) { f.text = "Sure!\n```json\n{\"label\": \"Negative\", \"score\": \"80%\"}\n```" })
	res, err := b.router.Complete(ctxTimeout(t, 10*time.Second), Request{TaskType: TaskSentiment, Prompt: "awful"})
	require.NoError(t, err)
	require.Equal(t, Gemini, res.Provider)
	require.True(t, res.Fallback)
	require.Equal(t, Negative, res.Label)
	require.InDelta(t, 0.8, *res.Score, 1e-9)
	msgs := b.fakes[Gemini].lastBody()["messages"].([]any)
	require.Contains(t, msgs[0].(map[string]any)["content"], "JSON only")

	// A chat answer that is no sentiment is malformed: both fail.
	b.fakes[Gemini].set(func(f *fake) { f.text = "I cannot say." })
	_, err = b.router.Complete(ctxTimeout(t, 10*time.Second), Request{TaskType: TaskSentiment, Prompt: "hmm"})
	e := requireCode(t, err, CodeUnavailable)
	require.Equal(t, KindMalformed, e.Attempts[1].Kind)
}

func TestGarbledClassificationFallsBack(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.fakes[HuggingFace].set(func(f *fake) { f.labels = `[[{"label":"joyful-ish","score":1}]]` })
	b.fakes[Gemini].set(func(f *fake) { f.text = `{"label":"neutral","score":0.6}` })
	res, err := b.router.Complete(ctxTimeout(t, 10*time.Second), Request{TaskType: TaskSentiment, Prompt: "ok"})
	require.NoError(t, err)
	require.Equal(t, Neutral, res.Label)
	require.Equal(t, KindMalformed, res.Attempts[0].Kind)
}

func TestCacheAnswersAnIdenticalRequest(t *testing.T) {
	t.Parallel()
	b := setup(t)
	req := Request{TaskType: TaskContentGeneration, Prompt: "hi", UserID: "u1", Cache: true}
	first, err := b.router.Complete(ctxTimeout(t, 10*time.Second), req)
	require.NoError(t, err)
	require.False(t, first.Cached)
	second, err := b.newRouter(t).Complete(ctxTimeout(t, 10*time.Second), req)
	require.NoError(t, err)
	require.True(t, second.Cached)
	require.Equal(t, first.Text, second.Text)
	require.Zero(t, second.Usage.TotalTokens)
	require.Equal(t, 1, b.fakes[Gemini].count())

	req.UserID = "u2" // another user's identical prompt is not answered from u1's cache
	_, err = b.router.Complete(ctxTimeout(t, 10*time.Second), req)
	require.NoError(t, err)
	req.Cache = false
	_, err = b.router.Complete(ctxTimeout(t, 10*time.Second), req)
	require.NoError(t, err)
	require.Equal(t, 3, b.fakes[Gemini].count())
}

func TestUsageAndFigures(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for range 3 {
		_, err := b.router.Complete(ctxTimeout(t, 10*time.Second), Request{TaskType: TaskCodeGeneration, Prompt: "hi", UserID: "u1"})
		require.NoError(t, err)
	}
	u, err := b.router.UserUsage(context.Background(), "u1", time.Now())
	require.NoError(t, err)
	require.Equal(t, int64(3), u.Providers[Qwen].Requests)
	require.Equal(t, int64(21), u.Total.PromptTokens)
	require.Equal(t, int64(9), u.Total.CompletionTokens)
	require.InDelta(t, 3*(7*0.12+3*0.39)/1e6, u.Total.CostUSD, 1e-12)

	st := b.router.Status(context.Background())
	q := st.Providers[5]
	require.Equal(t, Qwen, q.Name)
	require.EqualValues(t, 3, q.Calls)
	require.Zero(t, q.Failures)
	require.GreaterOrEqual(t, q.P50Ms, 0.0)
	require.Equal(t, int64(3), q.Quota.Used)
	require.Len(t, st.Routes, 6)
	require.Equal(t, RouteStatus{TaskType: TaskContentGeneration, Primary: Gemini, Backup: Qwen}, st.Routes[0])
}

func TestTestAll(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *Config) {
		p := c.Providers[Kimi]
		p.APIKey = ""
		c.Providers[Kimi] = p
	})
	b.fakes[Groq].set(func(f *fake) { f.mode = modeDown })
	b.fakes[Gemini].set(func(f *fake) { f.text = "pong" })
	rep := b.router.TestAll(ctxTimeout(t, 10*time.Second))
	require.Len(t, rep.Providers, len(Names))
	by := map[string]TestResult{}
	for _, r := range rep.Providers {
		by[r.Name] = r
	}
	require.True(t, by[Gemini].OK)
	require.Equal(t, "pong", by[Gemini].Text)
	require.False(t, by[Groq].OK)
	require.Equal(t, KindServer, by[Groq].Error.Kind)
	require.True(t, by[HuggingFace].OK)
	require.Equal(t, Positive, by[HuggingFace].Text)
	require.False(t, by[Kimi].Configured)
	require.Zero(t, b.fakes[Kimi].count())
}

func TestCancelledCallerIsNotAProviderFailure(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *Config) { c.Breaker.Failures = 1 })
	b.fakes[Gemini].set(func(f *fake) { f.mode = modeStall })
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	_, err := b.router.Complete(ctx, Request{TaskType: TaskContentGeneration, Prompt: "hi"})
	require.ErrorIs(t, err, context.Canceled)
	require.Equal(t, CircuitClosed, b.router.Status(context.Background()).Providers[0].Circuit)
}

func TestRouterWithoutRedis(t *testing.T) {
	t.Parallel()
	f := newFake(t)
	cfg := testConfig("")
	p := cfg.Providers[Groq]
	p.BaseURL, p.APIKey = f.srv.URL+"/v1", "k-groq-123456"
	cfg.Providers[Groq] = p
	r, err := New(cfg, Options{})
	require.NoError(t, err)
	defer r.Close()
	res, err := r.Complete(context.Background(), Request{TaskType: TaskQuickDecision, Prompt: "hi", Cache: true})
	require.NoError(t, err)
	require.Equal(t, Groq, res.Provider)
	require.Len(t, r.Status(context.Background()).Providers, 6)
}

func TestSecretsStayHidden(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.fakes[Gemini].set(func(f *fake) { f.mode = modeAuth })
	b.fakes[Qwen].set(func(f *fake) { f.mode = modeAuth })
	_, err := b.router.Complete(ctxTimeout(t, 10*time.Second), Request{TaskType: TaskContentGeneration, Prompt: "hi"})
	require.Error(t, err)
	require.NotContains(t, err.Error(), "key-gemini-0123456789")
	require.NotContains(t, err.Error(), "key-qwen-0123456789")
	require.Contains(t, err.Error(), "[redacted]")

	dump := fmt.Sprintf("%v %+v %#v", b.cfg, b.cfg, b.cfg.Providers[Gemini])
	require.NotContains(t, dump, "0123456789")
	require.True(t, errors.Is(err, err))
	require.False(t, strings.Contains(fmt.Sprint(b.cfg.Providers[Gemini].APIKey), "key"))
}

// TestRedisDownStillAnswers: quotas, figures and shared circuits are lost
// for the moment, but AI keeps working.
func TestRedisDownStillAnswers(t *testing.T) {
	t.Parallel()
	e, err := weftredis.StartEmbedded("127.0.0.1:0")
	require.NoError(t, err)
	rdb, err := weftredis.Connect(context.Background(), e.URL())
	require.NoError(t, err)
	t.Cleanup(func() { _ = rdb.Close() })
	f := newFake(t)
	cfg := testConfig("x:")
	p := cfg.Providers[Groq]
	p.BaseURL, p.APIKey, p.DailyRequests = f.srv.URL+"/v1", "k-groq-123456", 1
	cfg.Providers[Groq] = p
	r, err := New(cfg, Options{Redis: rdb})
	require.NoError(t, err)
	t.Cleanup(r.Close)
	e.Close()
	for range 2 {
		res, err := r.Complete(ctxTimeout(t, 10*time.Second), Request{TaskType: TaskQuickDecision, Prompt: "hi", Cache: true, UserID: "u"})
		require.NoError(t, err)
		require.Equal(t, Groq, res.Provider)
	}
	require.Equal(t, CircuitClosed, r.Status(context.Background()).Providers[1].Circuit)
}

// A caller whose deadline has passed must not switch the quota off for
// everyone: it used to pause Redis, and with it every quota.
func TestExpiredCallerKeepsQuotasOn(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *Config) {
		p := c.Providers[Groq]
		p.DailyRequests = 2
		c.Providers[Groq] = p
	})
	expired, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel()
	answered := 0
	for i := range 10 {
		_, err := b.router.Complete(expired, Request{TaskType: TaskQuickDecision, Provider: Groq, Prompt: fmt.Sprint("late ", i), Cache: true, UserID: "u"})
		requireCode(t, err, CodeTimeout)
		res, err := b.router.Complete(ctxTimeout(t, 10*time.Second), Request{TaskType: TaskQuickDecision, Provider: Groq, Prompt: fmt.Sprint("hi ", i)})
		if err == nil {
			require.Equal(t, Groq, res.Provider)
			answered++
		} else {
			requireCode(t, err, CodeQuotaExceeded)
		}
	}
	require.Equal(t, 2, answered)
	require.Equal(t, 2, b.fakes[Groq].count())
}

// The ledger's commands run on a context of their own: a caller's deadline
// neither loses the count nor pauses Redis.
func TestReserveOutlivesTheCaller(t *testing.T) {
	t.Parallel()
	b := setup(t)
	expired, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel()
	cfg := ProviderConfig{DailyRequests: 1}
	_, err := b.router.ledger.reserve(expired, Groq, cfg, 0)
	require.NoError(t, err)
	require.NotNil(t, b.router.redis.client(), "a caller's deadline does not pause Redis")
	_, err = b.router.ledger.reserve(context.Background(), Groq, cfg, 0)
	require.ErrorIs(t, err, errOverQuota, "the expired caller's request was counted")

	g := &redisGate{rdb: b.rdb, now: time.Now}
	g.check(context.Canceled)
	require.NotNil(t, g.client(), "a cancelled context is not a Redis failure")
}

// Callers whose deadlines are shorter than a healthy provider's answer say
// nothing of its health: the circuit stays closed for everyone else.
func TestImpatientCallersDoNotOpenTheCircuit(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for _, n := range []string{Gemini, Qwen} {
		b.fakes[n].set(func(f *fake) { f.delay = 50 * time.Millisecond })
	}
	req := Request{TaskType: TaskContentGeneration, Prompt: "hi"}
	for range 5 {
		_, err := b.router.Complete(ctxTimeout(t, 20*time.Millisecond), req)
		requireCode(t, err, CodeTimeout)
	}
	for _, p := range b.newRouter(t).Status(context.Background()).Providers {
		require.Equal(t, CircuitClosed, p.Circuit, p.Name)
	}
	res, err := b.router.Complete(ctxTimeout(t, 10*time.Second), req)
	require.NoError(t, err)
	require.Equal(t, Gemini, res.Provider)
	require.False(t, res.Fallback)
}

// The attempt's own timeout still speaks of the provider.
func TestAttemptTimeoutCountsAgainstTheProvider(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *Config) {
		c.AttemptTimeout = 50 * time.Millisecond
		c.MaxAttempts = 1
		c.Breaker.Failures = 2
	})
	b.fakes[Gemini].set(func(f *fake) { f.mode = modeStall })
	for range 2 {
		res, err := b.router.Complete(ctxTimeout(t, 10*time.Second), Request{TaskType: TaskContentGeneration, Prompt: "hi"})
		require.NoError(t, err)
		require.Equal(t, Qwen, res.Provider)
	}
	require.Equal(t, CircuitOpen, b.router.Status(context.Background()).Providers[0].Circuit)
}

func TestHuggingFaceMessagesAreRedacted(t *testing.T) {
	t.Parallel()
	const key = "key-huggingface-0123456789"
	for _, mode := range []string{modeAuth, modeEcho} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			b.fakes[HuggingFace].set(func(f *fake) { f.mode = mode })
			_, err := b.router.Complete(ctxTimeout(t, 10*time.Second), Request{TaskType: TaskSentiment, Provider: HuggingFace, Prompt: "hi"})
			require.Error(t, err)
			require.NotContains(t, err.Error(), key)
			require.Contains(t, err.Error(), "[redacted]")

			rep := b.router.TestAll(ctxTimeout(t, 10*time.Second))
			require.NotNil(t, rep.Providers[2].Error)
			require.NotContains(t, rep.Providers[2].Error.Message, key)
		})
	}
}

// Concurrent calls reserve their tokens before they are made, so together
// they cannot run far past the token quota.
func TestTokenQuotaHoldsUnderConcurrency(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *Config) {
		p := c.Providers[Groq]
		p.DailyTokens = 25 // a call spends 10 and reserves its MaxTokens, 10
		c.Providers[Groq] = p
	})
	b.fakes[Groq].set(func(f *fake) { f.delay = 100 * time.Millisecond })
	var wg sync.WaitGroup
	for range 10 {
		wg.Go(func() {
			_, err := b.router.Complete(ctxTimeout(t, 10*time.Second), Request{TaskType: TaskQuickDecision, Provider: Groq, Prompt: "hi", MaxTokens: 10})
			if err != nil {
				requireCode(t, err, CodeQuotaExceeded)
			}
		})
	}
	wg.Wait()
	require.Equal(t, 3, b.fakes[Groq].count(), "0, 10 and 20 were under the quota")
	q := b.router.Status(context.Background()).Providers[1].Quota
	require.Equal(t, Quota{Used: 3, TokensUsed: 30, TokensLimit: 25}, q, "reservations are settled to what was spent")

	// A failed call gives its reservation back.
	c := setup(t, func(c *Config) {
		p := c.Providers[Groq]
		p.DailyTokens = 1000
		c.Providers[Groq] = p
	})
	c.fakes[Groq].set(func(f *fake) { f.mode = modeDown })
	_, err := c.router.Complete(ctxTimeout(t, 10*time.Second), Request{TaskType: TaskQuickDecision, Provider: Groq, Prompt: "hi"})
	requireCode(t, err, CodeUnavailable)
	require.Zero(t, c.router.Status(context.Background()).Providers[1].Quota.TokensUsed)
}

func TestOversizedAnswerFallsBack(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *Config) { c.MaxAnswerBytes = 1024 })
	b.fakes[Gemini].set(func(f *fake) { f.text = strings.Repeat("x", 4096) })
	res, err := b.router.Complete(ctxTimeout(t, 10*time.Second), Request{TaskType: TaskContentGeneration, Prompt: "hi"})
	require.NoError(t, err)
	require.Equal(t, Qwen, res.Provider)
	require.Equal(t, KindMalformed, res.Attempts[0].Kind)
	require.Contains(t, res.Attempts[0].Message, "larger than 1024 bytes")
}

func TestOversizedStreamStops(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *Config) { c.MaxAnswerBytes = 4096 })
	b.fakes[Gemini].set(func(f *fake) { f.mode = modeFlood })
	got := 0
	start := time.Now()
	_, err := b.router.Complete(ctxTimeout(t, 10*time.Second), Request{TaskType: TaskContentGeneration, Prompt: "hi",
		OnToken: func(s string) { got += len(s) }})
	e := requireCode(t, err, CodeStreamInterrupted)
	require.Contains(t, e.Message, "larger than 4096 bytes")
	require.LessOrEqual(t, got, 4096)
	require.Less(t, time.Since(start), 2*time.Second)
}
