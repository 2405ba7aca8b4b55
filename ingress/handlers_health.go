package ingress

import (
	"context"
	"sync"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/weftdev/weft/events"
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

// dashboardHealth reports each dependency with its status and latency.
// Consumer lag per node type joins it with the execution engine.
func (s *Server) dashboardHealth(c *fiber.Ctx) error {
	results, ok := s.runChecks(c.UserContext())
	word := "healthy"
	if !ok {
		word = "degraded"
	}
	return c.JSON(fiber.Map{"status": word, "dependencies": results})
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
