package ingress

import (
	"context"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/weftdev/weft/events"
	"github.com/weftdev/weft/providers"
)

// AI is what the dashboard reads of the AI router.
type AI interface {
	Status(ctx context.Context) providers.Status
	TestAll(ctx context.Context) providers.TestReport
	UserUsage(ctx context.Context, userID string, day time.Time) (providers.UserUsage, error)
}

// testAITimeout bounds POST /api/dashboard/test-ai: every configured
// provider is called at once, each with a tiny prompt.
const testAITimeout = 30 * time.Second

// aiStatus reports every provider's configuration, health, circuit, live
// figures and quota, the routing table, and the caller's usage today.
func (s *Server) aiStatus(c *fiber.Ctx) error {
	if s.deps.AI == nil {
		return events.Errorf(events.CodeUnavailable, "the AI router is not running in this process")
	}
	ctx := c.UserContext()
	st := s.deps.AI.Status(ctx)
	out := fiber.Map{"providers": st.Providers, "routes": st.Routes}
	if u, err := s.deps.AI.UserUsage(ctx, principal(c).UserID, s.deps.Now()); err == nil {
		out["usage"] = u
	} else {
		s.deps.Log.Warn("ai usage read failed", "err", err)
	}
	return c.JSON(out)
}

// testAI calls every configured provider with a tiny prompt. Those calls
// cost money, so one runs at a time in a process; another caller meanwhile
// is told to retry.
func (s *Server) testAI(c *fiber.Ctx) error {
	if s.deps.AI == nil {
		return events.Errorf(events.CodeUnavailable, "the AI router is not running in this process")
	}
	select {
	case s.testAISlot <- struct{}{}:
		defer func() { <-s.testAISlot }()
	default:
		return events.Errorf(events.CodeRateLimited, "a provider test is already running; try again when it ends")
	}
	ctx, cancel := context.WithTimeout(c.UserContext(), testAITimeout)
	defer cancel()
	return c.JSON(s.deps.AI.TestAll(ctx))
}
