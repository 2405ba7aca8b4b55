package ingress

import (
	"errors"
	"mime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/weftdev/weft/events"
	"github.com/weftdev/weft/persistence/redis"
)

const principalKey = "weft.principal"

// requireJSON refuses a request that carries a body in anything but JSON.
func requireJSON(c *fiber.Ctx) error {
	switch c.Method() {
	case fiber.MethodPost, fiber.MethodPut, fiber.MethodPatch:
	default:
		return c.Next()
	}
	if len(c.Body()) == 0 && c.Get(fiber.HeaderContentType) == "" {
		return c.Next()
	}
	mt, _, err := mime.ParseMediaType(c.Get(fiber.HeaderContentType))
	if err != nil || (mt != fiber.MIMEApplicationJSON && !strings.HasSuffix(mt, "+json")) {
		return events.Errorf(events.CodeUnsupported, "the body must be application/json")
	}
	return c.Next()
}

// requireOperator lets through only the operators of Config.Admins.
func (s *Server) requireOperator(c *fiber.Ctx) error {
	p := principal(c)
	admin := func(v string) bool {
		return slices.ContainsFunc(s.cfg.Admins, func(a string) bool { return strings.EqualFold(strings.TrimSpace(a), v) })
	}
	if admin(p.UserID) {
		return c.Next()
	}
	u, err := s.deps.Store.UserByID(c.UserContext(), p.UserID)
	if err != nil && !events.IsNotFound(err) {
		return err
	}
	if u == nil || !admin(u.Email) {
		return events.Errorf(events.CodeForbidden, "only operators may do this")
	}
	return c.Next()
}

// securityHeaders are on every response: no content sniffing, no framing,
// no referrer, and no caching of API answers, which carry tokens, keys and
// users' data.
func securityHeaders(c *fiber.Ctx) error {
	h := &c.Response().Header
	h.Set(fiber.HeaderXContentTypeOptions, "nosniff")
	h.Set(fiber.HeaderXFrameOptions, "DENY")
	h.Set(fiber.HeaderContentSecurityPolicy, "default-src 'none'; frame-ancestors 'none'")
	h.Set(fiber.HeaderReferrerPolicy, "no-referrer")
	if strings.HasPrefix(c.Path(), "/api/") {
		h.Set(fiber.HeaderCacheControl, "no-store")
	}
	return c.Next()
}

// credential reads the caller's token from Authorization or X-API-Key.
func credential(c *fiber.Ctx) string {
	if h := c.Get(fiber.HeaderAuthorization); h != "" {
		scheme, token, ok := strings.Cut(h, " ")
		if ok && strings.EqualFold(scheme, "Bearer") {
			return strings.TrimSpace(token)
		}
		return ""
	}
	return strings.TrimSpace(c.Get("X-API-Key"))
}

func (s *Server) authenticate(c *fiber.Ctx) error {
	p, err := s.auth.Authenticate(c.UserContext(), credential(c))
	if err != nil {
		return err
	}
	c.Locals(principalKey, p)
	return c.Next()
}

// principal is the caller that authenticate let through.
func principal(c *fiber.Ctx) *Principal {
	p, _ := c.Locals(principalKey).(*Principal)
	return p
}

func (s *Server) limitIP(c *fiber.Ctx) error {
	return s.limit(c, "ip:"+c.IP(), s.cfg.RateIP)
}

func (s *Server) limitAuth(c *fiber.Ctx) error {
	return s.limit(c, "auth:"+c.IP(), s.cfg.RateAuth)
}

func (s *Server) limitUser(c *fiber.Ctx) error {
	return s.limit(c, "user:"+principal(c).UserID, s.cfg.RateUser)
}

// limit spends one request of key's budget. The budget lives in Redis so it
// holds across ingress replicas.
func (s *Server) limit(c *fiber.Ctx, key string, l redis.Limit) error {
	if s.deps.Limiter == nil {
		return c.Next()
	}
	ok, wait, err := s.deps.Limiter.Allow(c.UserContext(), key, l)
	if err != nil {
		if s.cfg.RateFailClosed {
			return events.Errorf(events.CodeUnavailable, "rate limits cannot be checked right now")
		}
		if !errors.Is(err, redis.ErrDown) {
			s.deps.Log.Warn("rate limit check failed; letting requests through while Redis is down", "err", err)
		}
		return c.Next()
	}
	if !ok {
		secs := retryAfter(wait)
		c.Set(fiber.HeaderRetryAfter, strconv.Itoa(secs))
		return events.Errorf(events.CodeRateLimited, "too many requests; retry after %d s", secs)
	}
	return c.Next()
}

// retryAfter is wait in whole seconds, rounded up so that waiting what it
// says is always enough, and at least 1.
func retryAfter(wait time.Duration) int {
	return max(int((wait+time.Second-1)/time.Second), 1)
}

// httpMetrics counts requests for /metrics.
type httpMetrics struct {
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
}

func newHTTPMetrics(reg *prometheus.Registry) *httpMetrics {
	m := &httpMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "weft_http_requests_total", Help: "HTTP requests by route and status.",
		}, []string{"method", "route", "status"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "weft_http_request_seconds", Help: "HTTP request latency by route.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 5},
		}, []string{"method", "route"}),
	}
	reg.MustRegister(m.requests, m.latency)
	return m
}

func (m *httpMetrics) middleware(c *fiber.Ctx) error {
	start := time.Now()
	err := c.Next()
	if err != nil {
		// Let the error handler write the response now so the status is known.
		if herr := c.App().ErrorHandler(c, err); herr != nil {
			_ = c.SendStatus(fiber.StatusInternalServerError)
		}
	}
	route := c.Route().Path
	m.requests.WithLabelValues(c.Method(), route, strconv.Itoa(c.Response().StatusCode())).Inc()
	m.latency.WithLabelValues(c.Method(), route).Observe(time.Since(start).Seconds())
	return nil
}
