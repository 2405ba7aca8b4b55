package ingress

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/gofiber/fiber/v2/middleware/adaptor"
	"github.com/gofiber/fiber/v2/middleware/cors"
	"github.com/gofiber/fiber/v2/middleware/recover"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/weftdev/weft/events"
	"github.com/weftdev/weft/persistence"
	"github.com/weftdev/weft/persistence/redis"
	"github.com/weftdev/weft/workers/flow"
	"github.com/weftdev/weft/workers/projector"
)

// Config is the ingress's behaviour. The zero value of each field means the
// documented default.
type Config struct {
	// BodyLimit caps a request body in bytes; past it the answer is 413.
	// Default 1 MiB.
	BodyLimit int
	// CORSOrigins lists the origins browsers may call from ("*" for any).
	// Empty means no CORS headers: only same-origin browser calls.
	CORSOrigins []string
	// RateIP is the budget of requests per client IP. Default 1200/min.
	RateIP redis.Limit
	// RateUser is the budget of requests per authenticated user. Default 1200/min.
	RateUser redis.Limit
	// RateAuth is the budget per client IP of register, login and refresh,
	// which guess passwords and tokens. Default 30/min.
	RateAuth redis.Limit
	// RateFailClosed answers 503 when Redis cannot be asked about a rate
	// limit. By default such a request is let through (fail open).
	RateFailClosed bool
	// TrustProxy reads the client IP from X-Forwarded-For when the direct
	// peer is in one of these CIDRs.
	TrustedProxies []string
	// Admins are the operators: emails (case-insensitive) or user ids.
	// Only they may call the routes that show server-wide figures or spend
	// the operator's provider keys (/api/dashboard/health,
	// /api/dashboard/test-ai); others get 403 there. Registration does not
	// verify emails: register an operator's account before listing it.
	Admins []string
	// Auth configures tokens and passwords.
	Auth AuthConfig
	// SSEHeartbeat is how often an idle event stream sends a comment
	// (which finds clients that left) and looks in the store for an end it
	// may have missed. Default 15 s.
	SSEHeartbeat time.Duration
}

// Check is a named dependency probe for /readyz and the health dashboard.
type Check struct {
	Name string
	Ping func(ctx context.Context) error
}

// Graphs compiles workflow versions, once per process, and makes
// executions of them.
type Graphs interface {
	Graph(ctx context.Context, w *persistence.Workflow) (*flow.Graph, error)
	NewExecution(ctx context.Context, w *persistence.Workflow, id string, inputs map[string]any, at time.Time) (*persistence.Execution, error)
}

// Deps are the parts the ingress talks to.
type Deps struct {
	Store  persistence.Store
	Auth   *Auth // built from Config.Auth when nil
	NC     *nats.Conn
	JS     jetstream.JetStream
	Graphs Graphs
	// Dashboard reads the counters the projector keeps.
	Dashboard *projector.Reader
	Cache     *redis.Cache
	Limiter   *redis.Limiter
	Checks    []Check
	Log       *slog.Logger
	Registry  *prometheus.Registry
	// SubmitKey signs the submissions this process hands to the starter
	// (events.SubmissionKey of the shared secret); without it they go
	// unsigned and the starter reads each execution from the store.
	SubmitKey []byte
	// AI serves the AI dashboard; nil answers it with 503.
	AI AI
	// Results, when set, brings this process's waiters the results of the
	// executions that end in this process, ahead of NATS; the waiters
	// subscribe on its connection, when it has one.
	Results *events.LocalResults
	Now     func() time.Time
}

// Server is the HTTP API.
type Server struct {
	cfg      Config
	deps     Deps
	auth     *Auth
	authStop func()
	app      *fiber.App
	metrics  *httpMetrics
	waiters  *waiters
	wfCache  *workflowCache
	runSub   *nats.Subscription
	runSlots chan struct{}
	// testAISlot lets one provider test run at a time.
	testAISlot chan struct{}
	done       chan struct{}
	once       sync.Once
}

// New builds the API.
func New(cfg Config, deps Deps) (_ *Server, err error) {
	if deps.Store == nil || deps.NC == nil || deps.JS == nil || deps.Graphs == nil {
		return nil, errors.New("ingress: a store, a NATS connection and a graph compiler are required")
	}
	if deps.Log == nil {
		deps.Log = slog.New(slog.DiscardHandler)
	}
	if deps.Now == nil {
		deps.Now = time.Now
	}
	if deps.Registry == nil {
		deps.Registry = prometheus.NewRegistry()
	}
	if cfg.SSEHeartbeat <= 0 {
		cfg.SSEHeartbeat = 15 * time.Second
	}
	if cfg.BodyLimit == 0 {
		cfg.BodyLimit = 1 << 20
	}
	if cfg.RateIP.IsZero() {
		cfg.RateIP = redis.PerMinute(1200)
	}
	if cfg.RateUser.IsZero() {
		cfg.RateUser = redis.PerMinute(1200)
	}
	if cfg.RateAuth.IsZero() {
		cfg.RateAuth = redis.PerMinute(30)
	}
	auth, authStop := deps.Auth, func() {}
	if auth == nil {
		// Its own credential checker, listening for revocations until
		// Shutdown.
		if auth, err = NewAuth(cfg.Auth, deps.Store, deps.Cache, deps.Log, deps.Now); err != nil {
			return nil, err
		}
		if authStop, err = auth.Listen(deps.NC); err != nil {
			return nil, err
		}
		defer func() {
			if err != nil {
				authStop()
			}
		}()
	}
	s := &Server{cfg: cfg, deps: deps, auth: auth, authStop: authStop, metrics: newHTTPMetrics(deps.Registry), done: make(chan struct{}),
		runSlots: make(chan struct{}, runConcurrency), testAISlot: make(chan struct{}, 1)}
	if s.wfCache, err = newWorkflowCache(deps.Store, deps.Cache, deps.NC); err != nil {
		return nil, err
	}
	// The waiters listen where the results handed to them are published,
	// which does not echo those back.
	resultsNC := deps.NC
	if c := deps.Results.Conn(); c != nil {
		resultsNC = c
	}
	if s.waiters, err = startWaiters(resultsNC, s.publishQueued); err != nil {
		return nil, err
	}
	if s.runSub, err = deps.NC.QueueSubscribe(events.SubjectRun, "weft-ingress", s.serveRunAsync); err != nil {
		s.waiters.stop()
		return nil, err
	}
	if deps.Results != nil {
		deps.Results.Receive(s.waiters.deliver)
	}
	s.app = fiber.New(fiber.Config{
		AppName: "weft",
		// Every string and byte slice a handler reads from a request is its
		// own copy: without it they are views of fasthttp's buffers, reused
		// by the next request, and one kept past its handler (a metric's
		// label, a cache key, a value a goroutine holds) silently changes.
		Immutable:               true,
		BodyLimit:               cfg.BodyLimit,
		ErrorHandler:            errorHandler(deps.Log),
		DisableStartupMessage:   true,
		ReadTimeout:             30 * time.Second,
		IdleTimeout:             120 * time.Second,
		EnableTrustedProxyCheck: len(cfg.TrustedProxies) > 0,
		TrustedProxies:          cfg.TrustedProxies,
		ProxyHeader:             proxyHeader(cfg.TrustedProxies),
	})
	s.routes()
	return s, nil
}

func proxyHeader(trusted []string) string {
	if len(trusted) > 0 {
		return fiber.HeaderXForwardedFor
	}
	return ""
}

// Serve answers requests on ln until Shutdown.
func (s *Server) Serve(ln net.Listener) error { return s.app.Listener(ln) }

// Shutdown stops accepting requests and waits for those in flight, up to
// ctx's deadline.
func (s *Server) Shutdown(ctx context.Context) error {
	s.once.Do(func() {
		close(s.done)
		_ = s.runSub.Drain()
		if s.deps.Results != nil {
			s.deps.Results.Receive(nil)
		}
		s.waiters.stop()
		s.wfCache.stop()
		s.authStop()
	})
	return s.app.ShutdownWithContext(ctx)
}

func (s *Server) routes() {
	app := s.app
	app.Use(recover.New())
	app.Use(s.metrics.middleware)
	app.Use(securityHeaders)
	if len(s.cfg.CORSOrigins) > 0 {
		app.Use(cors.New(cors.Config{
			AllowOrigins:  strings.Join(s.cfg.CORSOrigins, ","),
			AllowHeaders:  "Authorization, Content-Type, X-API-Key, Idempotency-Key",
			AllowMethods:  "GET,POST,PUT,DELETE,OPTIONS",
			ExposeHeaders: "Retry-After",
			MaxAge:        600,
		}))
	}

	app.Get("/healthz", s.healthz)
	app.Get("/readyz", s.readyz)
	app.Get("/metrics", adaptor.HTTPHandler(promhttp.HandlerFor(s.deps.Registry, promhttp.HandlerOpts{})))
	app.Get("/openapi.yaml", s.openAPI)

	api := app.Group("/api", requireJSON, s.limitIP)
	authg := api.Group("/auth")
	authg.Post("/register", s.limitAuth, s.register)
	authg.Post("/login", s.limitAuth, s.login)
	authg.Post("/refresh", s.limitAuth, s.refresh)

	// Ending access always gets through: an attacker with a leaked key can
	// spend its owner's per-user budget, and must not keep the owner from
	// revoking it or logging out. Registered before the group below, whose
	// middleware they therefore never reach; the per-IP budget still holds.
	api.Post("/auth/logout", s.authenticate, s.logout)
	api.Delete("/auth/api-keys/:id", s.authenticate, s.deleteAPIKey)

	priv := api.Group("", s.authenticate, s.limitUser)
	priv.Get("/auth/me", s.me)
	priv.Post("/auth/api-keys", s.createAPIKey)
	priv.Get("/auth/api-keys", s.listAPIKeys)

	priv.Post("/workflows", s.createWorkflow)
	priv.Get("/workflows", s.listWorkflows)
	priv.Get("/workflows/:id", s.getWorkflow)
	priv.Get("/workflows/:id/versions/:version", s.getWorkflowVersion)
	priv.Put("/workflows/:id", s.updateWorkflow)
	priv.Delete("/workflows/:id", s.deleteWorkflow)

	priv.Post("/executions", s.createExecution)
	priv.Get("/executions", s.listExecutions)
	priv.Get("/executions/:id", s.getExecution)
	priv.Post("/executions/:id/cancel", s.cancelExecution)
	priv.Get("/executions/:id/events", s.executionEvents)
	priv.Get("/executions/:id/logs", s.executionLogs)

	priv.Get("/dashboard/health", s.requireOperator, s.dashboardHealth)
	priv.Get("/dashboard/overview", s.dashboardOverview)
	priv.Get("/dashboard/workflows", s.dashboardWorkflows)
	priv.Get("/dashboard/metrics", s.dashboardMetrics)
	priv.Get("/dashboard/ai-status", s.aiStatus)
	priv.Post("/dashboard/test-ai", s.requireOperator, s.testAI)

	app.Use(func(c *fiber.Ctx) error {
		return fiber.NewError(fiber.StatusNotFound, "no route "+c.Method()+" "+c.Path())
	})
}
