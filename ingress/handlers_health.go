package ingress

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/weftdev/weft/events"
	"github.com/weftdev/weft/workers/flow"
)

type checkResult struct {
	Name      string  `json:"name"`
	Status    string  `json:"status"`
	LatencyMs float64 `json:"latencyMs"`
	Error     string  `json:"error,omitempty"`
}

// runChecks pings every dependency at once, each with a short deadline.
func (s *Server) runChecks(ctx context.Context) ([]checkResult, bool) {
	out := make([]checkResult, len(s.deps.Checks))
	var wg sync.WaitGroup
	for i, ch := range s.deps.Checks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			start := time.Now()
			err := ch.Ping(cctx)
			r := checkResult{Name: ch.Name, Status: "up", LatencyMs: float64(time.Since(start).Microseconds()) / 1000}
			if err != nil {
				r.Status, r.Error = "down", "unreachable"
				s.deps.Log.Warn("dependency check failed", "dependency", ch.Name, "err", err)
			}
			out[i] = r
		}()
	}
	wg.Wait()
	ok := true
	for _, r := range out {
		ok = ok && r.Status == "up"
	}
	return out, ok
}

func (s *Server) healthz(c *fiber.Ctx) error {
	return c.JSON(fiber.Map{"status": "ok"})
}

func (s *Server) readyz(c *fiber.Ctx) error {
	results, ok := s.runChecks(c.UserContext())
	status := fiber.StatusOK
	word := "ready"
	if !ok {
		status, word = fiber.StatusServiceUnavailable, "not_ready"
	}
	return c.Status(status).JSON(fiber.Map{"status": word, "checks": results})
}

// consumerLag is how far one durable consumer is behind.
type consumerLag struct {
	Consumer string `json:"consumer"`
	NodeType string `json:"nodeType,omitempty"`
	// Pending messages not yet delivered, and delivered but not yet acked.
	Pending     uint64 `json:"pending"`
	AckPending  int    `json:"ackPending"`
	Redelivered int    `json:"redelivered"`
	Error       string `json:"error,omitempty"`
}

// lags reads the starter's and every node type's consumer. A consumer no
// process has created yet (no pool of that type ever ran) is reported so.
func (s *Server) lags(ctx context.Context) []consumerLag {
	type target struct{ stream, consumer, nodeType string }
	targets := []target{{events.StreamSubmit, events.ConsumerStarter, ""}}
	for _, t := range flow.NodeTypes {
		targets = append(targets, target{events.StreamTasks, events.TaskConsumer(t), t})
	}
	out := make([]consumerLag, 0, len(targets))
	for _, tg := range targets {
		l := consumerLag{Consumer: tg.consumer, NodeType: tg.nodeType}
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		cons, err := s.deps.JS.Consumer(cctx, tg.stream, tg.consumer)
		if err == nil {
			var info *jetstream.ConsumerInfo
			if info, err = cons.Info(cctx); err == nil {
				l.Pending, l.AckPending, l.Redelivered = info.NumPending, info.NumAckPending, info.NumRedelivered
			}
		}
		cancel()
		switch {
		case errors.Is(err, jetstream.ErrConsumerNotFound):
			l.Error = "no worker of this type has run yet"
		case err != nil:
			l.Error = "unavailable"
		}
		out = append(out, l)
	}
	return out
}

// dashboardHealth reports each dependency with its status and latency,
// and how far behind each consumer (the starter, one per node type) is.
func (s *Server) dashboardHealth(c *fiber.Ctx) error {
	results, ok := s.runChecks(c.UserContext())
	word := "healthy"
	if !ok {
		word = "degraded"
	}
	return c.JSON(fiber.Map{"status": word, "dependencies": results, "consumers": s.lags(c.UserContext())})
}

// dashboardRead answers with what read returns from the projector's
// counters for the caller.
func (s *Server) dashboardRead(c *fiber.Ctx, read func(ctx context.Context, userID string) (any, error)) error {
	if s.deps.Dashboard == nil {
		return events.Errorf(events.CodeUnavailable, "the dashboard counters are not available")
	}
	v, err := read(c.UserContext(), principal(c).UserID)
	if err != nil {
		s.deps.Log.Warn("dashboard read failed", "err", err)
		return events.Errorf(events.CodeUnavailable, "the dashboard counters cannot be read right now")
	}
	return c.JSON(v)
}

func (s *Server) dashboardOverview(c *fiber.Ctx) error {
	return s.dashboardRead(c, func(ctx context.Context, u string) (any, error) { return s.deps.Dashboard.Overview(ctx, u) })
}

func (s *Server) dashboardWorkflows(c *fiber.Ctx) error {
	return s.dashboardRead(c, func(ctx context.Context, u string) (any, error) {
		items, err := s.deps.Dashboard.Workflows(ctx, u)
		return fiber.Map{"items": items}, err
	})
}

func (s *Server) dashboardMetrics(c *fiber.Ctx) error {
	return s.dashboardRead(c, func(ctx context.Context, u string) (any, error) { return s.deps.Dashboard.Metrics(ctx, u) })
}
