package ingress

import (
	"encoding/json"
	"strconv"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/weftdev/weft/events"
	"github.com/weftdev/weft/persistence"
	"github.com/weftdev/weft/workers/flow"
)

// workflowView is a workflow as served: its definition plus id, version and
// times.
type workflowView struct {
	ID      string `json:"id"`
	Version int    `json:"version"`
	*flow.Definition
	CreatedAt time.Time `json:"createdAt"`
	UpdatedAt time.Time `json:"updatedAt"`
}

func viewWorkflow(w *persistence.Workflow) (workflowView, error) {
	var def flow.Definition
	if err := json.Unmarshal(w.Definition, &def); err != nil {
		return workflowView{}, err
	}
	return workflowView{ID: w.ID, Version: w.Version, Definition: &def, CreatedAt: w.CreatedAt, UpdatedAt: w.UpdatedAt}, nil
}

// parseDefinition validates a definition body; every problem is reported
// with its path.
func parseDefinition(body []byte) (*flow.Definition, json.RawMessage, error) {
	if err := checkUTF8(body); err != nil {
		return nil, nil, err
	}
	def, problems := flow.Parse(body)
	if len(problems) > 0 {
		return nil, nil, events.Invalid(problems)
	}
	raw, err := json.Marshal(def)
	if err != nil {
		return nil, nil, err
	}
	return def, raw, nil
}

func (s *Server) createWorkflow(c *fiber.Ctx) error {
	def, raw, err := parseDefinition(c.Body())
	if err != nil {
		return err
	}
	now := s.deps.Now().UTC()
	w := &persistence.Workflow{
		ID: newID(), UserID: principal(c).UserID, Name: def.Name, Description: def.Description,
		Definition: raw, CreatedAt: now, UpdatedAt: now,
	}
	if err := s.deps.Store.CreateWorkflow(c.UserContext(), w); err != nil {
		return err
	}
	return s.sendWorkflow(c, fiber.StatusCreated, w)
}

func (s *Server) updateWorkflow(c *fiber.Ctx) error {
	def, raw, err := parseDefinition(c.Body())
	if err != nil {
		return err
	}
	w := &persistence.Workflow{
		ID: c.Params("id"), UserID: principal(c).UserID, Name: def.Name, Description: def.Description,
		Definition: raw, UpdatedAt: s.deps.Now().UTC(),
	}
	if err := s.deps.Store.UpdateWorkflow(c.UserContext(), w); err != nil {
		return err
	}
	// Only a change made is announced: a caller cannot evict another
	// user's workflow from every cache by naming it.
	s.wfCache.changed(c.UserContext(), w.ID)
	return s.sendWorkflow(c, fiber.StatusOK, w)
}

func (s *Server) getWorkflow(c *fiber.Ctx) error {
	w, err := s.deps.Store.GetWorkflow(c.UserContext(), principal(c).UserID, c.Params("id"))
	if err != nil {
		return err
	}
	return s.sendWorkflow(c, fiber.StatusOK, w)
}

func (s *Server) getWorkflowVersion(c *fiber.Ctx) error {
	v, err := strconv.Atoi(c.Params("version"))
	if err != nil || v < 1 {
		return events.Errorf(events.CodeNotFound, "workflow version not found")
	}
	w, err := s.deps.Store.GetWorkflowVersion(c.UserContext(), principal(c).UserID, c.Params("id"), v)
	if err != nil {
		return err
	}
	return s.sendWorkflow(c, fiber.StatusOK, w)
}

func (s *Server) deleteWorkflow(c *fiber.Ctx) error {
	if err := s.deps.Store.DeleteWorkflow(c.UserContext(), principal(c).UserID, c.Params("id")); err != nil {
		return err
	}
	s.wfCache.changed(c.UserContext(), c.Params("id"))
	return c.SendStatus(fiber.StatusNoContent)
}

func (s *Server) listWorkflows(c *fiber.Ctx) error {
	page, err := pageParams(c)
	if err != nil {
		return err
	}
	ws, next, err := s.deps.Store.ListWorkflows(c.UserContext(), principal(c).UserID, page)
	if err != nil {
		return err
	}
	items := make([]workflowView, 0, len(ws))
	for i := range ws {
		v, err := viewWorkflow(&ws[i])
		if err != nil {
			return err
		}
		items = append(items, v)
	}
	return c.JSON(fiber.Map{"items": items, "nextCursor": nullable(next)})
}

func (s *Server) sendWorkflow(c *fiber.Ctx, status int, w *persistence.Workflow) error {
	v, err := viewWorkflow(w)
	if err != nil {
		return err
	}
	return c.Status(status).JSON(v)
}

// pageParams reads ?limit= (1..100, default 20) and ?cursor=.
func pageParams(c *fiber.Ctx) (persistence.Page, error) {
	p := persistence.Page{Limit: 20, Cursor: c.Query("cursor")}
	if l := c.Query("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > 100 {
			return p, events.Invalid([]events.FieldError{{Path: "limit", Message: "must be a whole number from 1 to 100"}})
		}
		p.Limit = n
	}
	if len(p.Cursor) > 128 {
		return p, events.Invalid([]events.FieldError{{Path: "cursor", Message: "is not a cursor this API gave"}})
	}
	return p, nil
}

// nullable turns "" into JSON null.
func nullable(s string) any {
	if s == "" {
		return nil
	}
	return s
}
