package nodes

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/weftdev/weft/workers/flow"
)

// HTTP_REQUEST calls a remote server. Every string of its config may hold
// {{ }} templates; the request is built from the rendered values, sent
// through a transport whose dialer refuses internal addresses (see ssrf.go),
// and the answer becomes {"status", "headers", "body"}.
//
// Failures are classified for the engine's retry policy: 429, 5xx, timeouts
// and network errors are transient, everything else (4xx, a refused address,
// a bad URL, a body too large) is permanent because another attempt would
// meet the same answer.

// Limits of HTTP_REQUEST.
const (
	// DefaultMaxResponseBytes caps a response body when neither the node nor
	// HTTPConfig says otherwise: the engine's default cap of a node's
	// output, and small enough that a runaway download cannot fill a
	// worker's memory.
	DefaultMaxResponseBytes int64 = 1 << 20
	// DefaultHTTPKeepAliveEvery is how often a waiting request tells
	// JetStream it is still running, well inside any sensible AckWait.
	DefaultHTTPKeepAliveEvery = 10 * time.Second

	maxRedirects     = 5
	maxRetryAfter    = time.Hour // a server asking for longer is not waited on longer than this
	maxErrorSnippet  = 200       // bytes of an error response quoted in the node's error
	userAgent        = "Weft-HTTP-Request/1"
	headerIdempotent = "Idempotency-Key"
)

var httpMethods = []string{"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"}

// HTTPConfig is the process-wide setting of HTTP_REQUEST; cmd builds it from
// the environment, so this package reads none.
type HTTPConfig struct {
	// AllowPrivate lets requests reach loopback, private (RFC 1918), CGNAT,
	// link-local and unique-local addresses, for self-hosted setups that call
	// their own services. Cloud-metadata, unspecified and multicast addresses
	// stay refused.
	AllowPrivate bool
	// MaxResponseBytes caps a response body for nodes whose config sets no
	// maxResponseBytes; zero means DefaultMaxResponseBytes.
	MaxResponseBytes int64
	// KeepAliveEvery is how often a waiting request calls Input.KeepAlive;
	// zero means DefaultHTTPKeepAliveEvery.
	KeepAliveEvery time.Duration
}

// httpNode is one configured HTTP_REQUEST runner with its own transport, so
// a connection pooled under one policy is never reused under another.
type httpNode struct {
	cfg       HTTPConfig
	check     func(netip.Addr) error // the address policy; tests may swap it
	transport *http.Transport
	client    *http.Client
	now       func() time.Time
}

// currentHTTP is the runner behind the registered HTTP_REQUEST spec;
// ConfigureHTTP swaps it atomically so no map write races the engine.
var currentHTTP atomic.Pointer[httpNode]

func init() {
	currentHTTP.Store(newHTTPNode(HTTPConfig{}, nil))
	Register(flow.TypeHTTPRequest, Spec{Runner: RunnerFunc(func(ctx context.Context, in Input) (any, error) {
		return currentHTTP.Load().Run(ctx, in)
	})})
}

// NewHTTP returns an HTTP_REQUEST spec with its own transport and cfg, for
// callers that register or Replace node types themselves.
func NewHTTP(cfg HTTPConfig) Spec {
	return Spec{Runner: newHTTPNode(cfg, nil)}
}

// ConfigureHTTP sets the config of the registered HTTP_REQUEST node; cmd
// calls it at startup (AllowPrivate from WEFT_HTTP_ALLOW_PRIVATE) because
// this package reads no environment. Requests already running finish under
// the old config.
func ConfigureHTTP(cfg HTTPConfig) {
	if old := currentHTTP.Swap(newHTTPNode(cfg, nil)); old != nil {
		old.transport.CloseIdleConnections()
	}
}

// newHTTPNode builds a runner for cfg; check overrides the address policy
// (nil: checkAddr with cfg.AllowPrivate).
func newHTTPNode(cfg HTTPConfig, check func(netip.Addr) error) *httpNode {
	if cfg.MaxResponseBytes <= 0 {
		cfg.MaxResponseBytes = DefaultMaxResponseBytes
	}
	if cfg.KeepAliveEvery <= 0 {
		cfg.KeepAliveEvery = DefaultHTTPKeepAliveEvery
	}
	if check == nil {
		allow := cfg.AllowPrivate
		check = func(ip netip.Addr) error { return checkAddr(ip, allow) }
	}
	h := &httpNode{cfg: cfg, check: check, now: time.Now}
	dialer := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second, Control: dialControl(check)}
	h.transport = &http.Transport{
		Proxy: nil, // a proxy from the environment would dial for us, past the guard
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			host, port, err := net.SplitHostPort(addr)
			if err != nil {
				return nil, err
			}
			if ip, ok := hostIP(host); ok {
				// Dial the IP the host spells, whatever the resolver would
				// have made of 0x7f.1; Control checks it again.
				if err := check(ip); err != nil {
					return nil, err
				}
				addr = net.JoinHostPort(ip.String(), port)
			}
			return dialer.DialContext(ctx, network, addr)
		},
		ForceAttemptHTTP2:      true, // a custom DialContext turns HTTP/2 off otherwise
		TLSClientConfig:        &tls.Config{MinVersion: tls.VersionTLS12},
		TLSHandshakeTimeout:    10 * time.Second,
		ExpectContinueTimeout:  time.Second,
		IdleConnTimeout:        90 * time.Second,
		MaxIdleConns:           100,
		MaxIdleConnsPerHost:    16,
		MaxResponseHeaderBytes: 1 << 20,
	}
	h.client = &http.Client{Transport: h.transport, CheckRedirect: h.checkRedirect}
	return h
}

// checkRedirect follows at most maxRedirects redirects, to http(s) only, and
// refuses a literal internal address before dialling; a host name meets the
// dial-time check like the first request.
func (h *httpNode) checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) > maxRedirects {
		return Permanent("too_many_redirects", "stopped after %d redirects", maxRedirects)
	}
	if req.URL.Scheme != "http" && req.URL.Scheme != "https" {
		return Permanent("redirect_refused", "a redirect to a %q URL is not followed; only http and https are", req.URL.Scheme)
	}
	if ip, ok := hostIP(req.URL.Hostname()); ok {
		if err := h.check(ip); err != nil {
			return err
		}
	}
	return nil
}

// Run sends the node's request once; the engine retries transient failures.
func (h *httpNode) Run(ctx context.Context, in Input) (any, error) {
	req, limit, failOnStatus, err := h.build(ctx, in)
	if err != nil {
		return nil, err
	}
	defer h.keepAlive(in.KeepAlive)()

	resp, err := h.client.Do(req)
	if err != nil {
		return nil, h.requestError(ctx, err)
	}
	defer resp.Body.Close()

	ok := resp.StatusCode >= 200 && resp.StatusCode <= 299
	if !ok && failOnStatus {
		snippet, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorSnippet))
		return nil, h.statusError(resp, snippet)
	}
	if resp.ContentLength > limit {
		return nil, tooLarge(limit)
	}
	raw, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, h.requestError(ctx, err)
	}
	if int64(len(raw)) > limit {
		return nil, tooLarge(limit)
	}
	return map[string]any{
		"status":  resp.StatusCode,
		"headers": responseHeaders(resp.Header),
		"body":    responseBody(resp.Header.Get("Content-Type"), raw),
	}, nil
}

// build renders the node's params into a request, its body cap and whether a
// non-2xx status fails the node.
func (h *httpNode) build(ctx context.Context, in Input) (*http.Request, int64, bool, error) {
	p := in.Node.Params
	render := func(key string) (any, error) {
		v, err := flow.Render(p[key], in.Scope)
		if err != nil {
			return nil, exprFailure("template_error", key, err)
		}
		return v, nil
	}

	method := "GET"
	if v, err := render("method"); err != nil {
		return nil, 0, false, err
	} else if v != nil {
		s, _ := v.(string)
		method = strings.ToUpper(strings.TrimSpace(s))
		if !slices.Contains(httpMethods, method) {
			return nil, 0, false, Permanent("invalid_method", "method must be one of %s", strings.Join(httpMethods, ", "))
		}
	}

	v, err := render("url")
	if err != nil {
		return nil, 0, false, err
	}
	u, err := requestURL(v)
	if err != nil {
		return nil, 0, false, err
	}
	if q, err := render("query"); err != nil {
		return nil, 0, false, err
	} else if m, ok := q.(map[string]any); ok && len(m) > 0 {
		vals := u.Query()
		for k, v := range m {
			if list, ok := v.([]any); ok {
				for _, e := range list {
					vals.Add(k, stringify(e))
				}
				continue
			}
			vals.Add(k, stringify(v))
		}
		u.RawQuery = vals.Encode()
	}

	var body io.Reader
	contentType := ""
	if b, err := render("body"); err != nil {
		return nil, 0, false, err
	} else if s, ok := b.(string); ok {
		body = strings.NewReader(s)
	} else if b != nil {
		raw, err := json.Marshal(b)
		if err != nil {
			return nil, 0, false, Permanent("invalid_body", "body cannot be written as JSON: %s", err)
		}
		body, contentType = bytes.NewReader(raw), "application/json"
	}

	req, err := http.NewRequestWithContext(ctx, method, u.String(), body)
	if err != nil {
		return nil, 0, false, Permanent("invalid_url", "%s", err)
	}
	req.Header.Set("User-Agent", userAgent)
	if hv, err := render("headers"); err != nil {
		return nil, 0, false, err
	} else if m, ok := hv.(map[string]any); ok {
		for name, v := range m {
			s := stringify(v)
			if !validHeaderValue(s) {
				return nil, 0, false, Permanent("invalid_header", "headers.%s: the value must not contain control characters", name)
			}
			if strings.EqualFold(name, "Host") {
				req.Host = s // Go ignores a Host header; the dial still goes to the URL's host
				continue
			}
			req.Header.Set(name, s)
		}
	}
	if contentType != "" && req.Header.Get("Content-Type") == "" {
		req.Header.Set("Content-Type", contentType)
	}
	// The same key on every attempt and redelivery lets the server drop a
	// repeat. It is always "<executionId>:<nodeId>", as the contract says,
	// even over a header the workflow set: a constant one would make
	// different executions look like repeats.
	if in.IdempotencyKey != "" {
		req.Header.Set(headerIdempotent, in.IdempotencyKey)
	}

	failOnStatus := true
	if v, err := render("failOnStatus"); err != nil {
		return nil, 0, false, err
	} else if b, ok := v.(bool); ok {
		failOnStatus = b
	}
	limit := h.cfg.MaxResponseBytes
	if n, ok := positiveInt(p["maxResponseBytes"]); ok {
		limit = min(n, flow.MaxResponseBytesCap)
	}
	return req, limit, failOnStatus, nil
}

// requestURL checks a rendered url: absolute, http or https, with a host.
// Validation checks a literal url at save time; a templated one is known
// only now, and may render to file:// or gopher://.
func requestURL(v any) (*url.URL, error) {
	s, ok := v.(string)
	if !ok || strings.TrimSpace(s) == "" {
		return nil, Permanent("invalid_url", "url must render to a non-empty string")
	}
	u, err := url.Parse(strings.TrimSpace(s))
	if err != nil {
		return nil, Permanent("invalid_url", "url is not a valid URL")
	}
	u.Scheme = strings.ToLower(u.Scheme)
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, Permanent("invalid_url", "url must be an absolute http or https URL, got scheme %q", u.Scheme)
	}
	if u.Hostname() == "" {
		return nil, Permanent("invalid_url", "url must name a host")
	}
	return u, nil
}

// requestError classifies a failure to get or read a response. The URL is
// left out of messages, as its query may hold a secret.
func (h *httpNode) requestError(ctx context.Context, err error) error {
	var ne *Error
	if errors.As(err, &ne) {
		return ne // from checkRedirect
	}
	var be *blockedAddrError
	if errors.As(err, &be) {
		return Permanent("address_not_allowed", "%s", be.Error())
	}
	switch ctx.Err() {
	case context.DeadlineExceeded:
		return Transient("timeout", "the request did not finish in time")
	case context.Canceled:
		return Permanent("cancelled", "the request was cancelled")
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	var certErr *tls.CertificateVerificationError
	if errors.As(err, &certErr) {
		return Permanent("tls_error", "the server's certificate is not trusted: %s", certErr.Err)
	}
	return Transient("network_error", "%s", err)
}

// statusError is the failure for a non-2xx answer: 429 and 5xx may pass, so
// they are transient and carry the server's Retry-After; others are not.
func (h *httpNode) statusError(resp *http.Response, snippet []byte) *Error {
	msg := "the server answered " + resp.Status
	if s := strings.TrimSpace(strings.ToValidUTF8(string(snippet), "\uFFFD")); s != "" {
		msg += ": " + s
	}
	code := "http_" + strconv.Itoa(resp.StatusCode)
	if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500 {
		e := Transient(code, "%s", msg)
		e.RetryAfter = parseRetryAfter(resp.Header.Get("Retry-After"), h.now())
		return e
	}
	return Permanent(code, "%s", msg)
}

// parseRetryAfter reads Retry-After as seconds or an HTTP date; anything
// else, or a time in the past, is no wait. It is capped at maxRetryAfter.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	var d time.Duration
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs <= 0 {
			return 0
		}
		d = time.Duration(min(secs, int64(maxRetryAfter/time.Second))) * time.Second
	} else if t, err := http.ParseTime(v); err == nil {
		d = t.Sub(now)
	}
	return min(max(d, 0), maxRetryAfter)
}

// keepAlive calls ka every KeepAliveEvery until the returned stop is called,
// so a slow server does not get the task redelivered to another worker.
func (h *httpNode) keepAlive(ka func()) (stop func()) {
	if ka == nil {
		return func() {}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(h.cfg.KeepAliveEvery)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				ka()
			}
		}
	})
	return func() { close(done); wg.Wait() }
}

func tooLarge(limit int64) *Error {
	return Permanent("response_too_large", "the response body is larger than %d bytes (maxResponseBytes)", limit)
}

// responseHeaders flattens headers to lower-case name → value, repeated
// values joined by ", ", so expressions need not guess a server's casing.
func responseHeaders(hdr http.Header) map[string]any {
	out := make(map[string]any, len(hdr))
	for name, vals := range hdr {
		out[strings.ToLower(name)] = strings.Join(vals, ", ")
	}
	return out
}

// responseBody parses a JSON response (application/json or +json); anything
// else, or JSON that does not parse, is kept as text.
func responseBody(contentType string, raw []byte) any {
	mt, _, _ := mime.ParseMediaType(contentType)
	if (mt == "application/json" || strings.HasSuffix(mt, "+json")) && len(bytes.TrimSpace(raw)) > 0 {
		var v any
		if err := json.Unmarshal(raw, &v); err == nil {
			return v
		}
	}
	if !utf8.Valid(raw) {
		return strings.ToValidUTF8(string(raw), "\uFFFD")
	}
	return string(raw)
}

// stringify writes a rendered header or query value: strings as they are,
// anything else as JSON (1, true, {"a":1}).
func stringify(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case nil:
		return ""
	}
	raw, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(raw)
}

// validHeaderValue refuses control characters, which would split a header
// (CR, LF) or be refused by the transport as a network-looking error.
func validHeaderValue(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < 0x20 && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}

// positiveInt reads a validated config number.
func positiveInt(v any) (int64, bool) {
	var n int64
	switch x := v.(type) {
	case float64:
		n = int64(x)
	case int:
		n = int64(x)
	case int64:
		n = x
	case json.Number:
		i, err := x.Int64()
		if err != nil {
			return 0, false
		}
		n = i
	default:
		return 0, false
	}
	return n, n > 0
}
