package providers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	openai "github.com/sashabaranov/go-openai"
)

// Codes of the router's errors. The AI_PROCESSOR node reports them as its
// error code.
const (
	// CodeUnavailable: every provider tried failed in a way that may pass
	// (down, slow, rate limited, garbled). Retryable.
	CodeUnavailable = "ai_unavailable"
	// CodeBadRequest: a provider refused the request itself (400, 413, 422),
	// or the request names an unknown task type or provider. Another
	// provider or attempt would refuse it too.
	CodeBadRequest = "ai_bad_request"
	// CodeNotConfigured: no provider the request could use has a key.
	CodeNotConfigured = "ai_not_configured"
	// CodeQuotaExceeded: every provider that could answer is over its
	// daily quota. Not retryable today.
	CodeQuotaExceeded = "ai_quota_exceeded"
	// CodeStreamInterrupted: a streamed answer broke off after tokens had
	// been delivered, so no backup could take over without repeating them.
	// Retryable.
	CodeStreamInterrupted = "ai_stream_interrupted"
	// CodeTimeout: the caller's deadline passed before any provider answered.
	// Retryable.
	CodeTimeout = "ai_timeout"
)

// Error is a failed request: a code from the list above, a message safe to
// show a user (no keys, no URLs with credentials), whether another attempt
// may succeed, the least wait before it, and what happened at each provider.
type Error struct {
	Code       string
	Message    string
	Retryable  bool
	RetryAfter time.Duration
	Attempts   []AttemptError
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

// AttemptError is why one provider did not answer.
type AttemptError struct {
	Provider string `json:"provider"`
	Kind     Kind   `json:"kind"`
	Status   int    `json:"status,omitempty"`
	Message  string `json:"message"`
}

// Kind classifies one provider's failure, which decides retry and fallback.
type Kind string

// Kinds of provider failure.
const (
	KindTimeout       Kind = "timeout"        // retried, then backup
	KindRateLimited   Kind = "rate_limited"   // 429: retried after Retry-After, then backup
	KindServer        Kind = "server_error"   // 5xx: retried, then backup
	KindNetwork       Kind = "network_error"  // retried, then backup
	KindMalformed     Kind = "malformed"      // an answer that does not parse: retried, then backup
	KindAuth          Kind = "auth"           // 401, 403, 404: this provider's setup, so backup at once
	KindBadRequest    Kind = "bad_request"    // 400-class: no retry, no backup
	KindCircuitOpen   Kind = "circuit_open"   // skipped: the provider is down
	KindQuota         Kind = "quota_exceeded" // skipped: over its daily quota
	KindNotConfigured Kind = "not_configured" // skipped: no key
)

// callError is one provider's failure inside the router.
type callError struct {
	kind       Kind
	status     int
	msg        string
	retryAfter time.Duration
	// emitted reports that streamed tokens had reached the caller.
	emitted bool
}

func (e *callError) Error() string { return string(e.kind) + ": " + e.msg }

// retryable reports whether the same provider may be asked again.
func (e *callError) retryable() bool {
	switch e.kind {
	case KindTimeout, KindRateLimited, KindServer, KindNetwork, KindMalformed:
		return !e.emitted
	}
	return false
}

// breakerFailure reports whether the failure says the provider is unwell.
// A refused request says nothing about its health.
func (e *callError) breakerFailure() bool {
	switch e.kind {
	case KindBadRequest, KindCircuitOpen, KindQuota, KindNotConfigured:
		return false
	}
	return true
}

// classify turns what a backend returned into a callError. attemptCtx is
// the attempt's context: its ending is a timeout (whose fault, the
// attempt's own timeout or the caller's, attempt decides).
func classify(attemptCtx context.Context, err error, retryAfter time.Duration, redact func(string) string) *callError {
	var sb *streamBroken
	if errors.As(err, &sb) {
		ce := *classify(attemptCtx, sb.err, retryAfter, redact)
		ce.emitted = true
		return &ce
	}
	var ce *callError
	if errors.As(err, &ce) {
		// A backend's message may quote the provider's answer.
		out := *ce
		out.msg = redact(out.msg)
		return &out
	}
	if attemptCtx.Err() != nil || errors.Is(err, context.DeadlineExceeded) {
		return &callError{kind: KindTimeout, msg: "no answer in time"}
	}
	var apiErr *openai.APIError
	if errors.As(err, &apiErr) {
		return statusError(apiErr.HTTPStatusCode, redact(apiErr.Message), retryAfter)
	}
	var reqErr *openai.RequestError
	if errors.As(err, &reqErr) && reqErr.HTTPStatusCode > 0 {
		return statusError(reqErr.HTTPStatusCode, snippet([]byte(redact(string(reqErr.Body)))), retryAfter)
	}
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	if errors.As(err, &syn) || errors.As(err, &typ) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, openai.ErrTooManyEmptyStreamMessages) {
		return &callError{kind: KindMalformed, msg: "the answer could not be read: " + redact(err.Error())}
	}
	return &callError{kind: KindNetwork, msg: redact(networkMessage(err))}
}

// statusError classifies an HTTP error status.
func statusError(status int, msg string, retryAfter time.Duration) *callError {
	e := &callError{status: status, msg: fmt.Sprintf("answered %d %s", status, http.StatusText(status))}
	if msg = strings.TrimSpace(msg); msg != "" {
		e.msg += ": " + msg
	}
	lower := strings.ToLower(msg)
	switch {
	case status == http.StatusTooManyRequests:
		e.kind, e.retryAfter = KindRateLimited, retryAfter
	case status == http.StatusRequestTimeout:
		e.kind = KindTimeout
	case status >= 500:
		e.kind, e.retryAfter = KindServer, retryAfter
	case status == http.StatusUnauthorized || status == http.StatusForbidden || status == http.StatusNotFound ||
		status == http.StatusPaymentRequired:
		e.kind = KindAuth
	case status == http.StatusBadRequest && (strings.Contains(lower, "api key") || strings.Contains(lower, "api_key")):
		// Gemini answers a bad key with 400; that is this provider's setup,
		// not the request, so the backup may still answer.
		e.kind = KindAuth
	default:
		e.kind = KindBadRequest
	}
	return e
}

// networkMessage drops the URL from a transport error: a base URL may carry
// credentials in its user info or query.
func networkMessage(err error) string {
	type unwrapper interface{ Unwrap() error }
	var op interface{ Timeout() bool }
	msg := err.Error()
	if u, ok := err.(unwrapper); ok && strings.Contains(msg, "://") {
		if inner := u.Unwrap(); inner != nil {
			msg = inner.Error()
		}
	}
	if errors.As(err, &op) && op.Timeout() {
		return "the connection timed out"
	}
	return "the provider could not be reached: " + msg
}

// snippet is the start of an error body, for messages.
func snippet(b []byte) string {
	const n = 200
	s := strings.ToValidUTF8(strings.TrimSpace(string(b)), "\uFFFD")
	if len(s) > n {
		s = s[:n] + "…"
	}
	return s
}

// parseRetryAfter reads Retry-After as seconds or an HTTP date.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if secs, err := strconv.ParseFloat(v, 64); err == nil {
		if secs <= 0 {
			return 0
		}
		return min(time.Duration(secs*float64(time.Second)), time.Hour)
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return min(t.Sub(now), time.Hour)
	}
	return 0
}
