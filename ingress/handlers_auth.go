package ingress

import (
	"net/mail"
	"time"
	"unicode/utf8"

	"github.com/gofiber/fiber/v2"

	"github.com/weftdev/weft/events"
	"github.com/weftdev/weft/persistence"
)

type userView struct {
	ID    string `json:"id"`
	Email string `json:"email"`
	Name  string `json:"name"`
}

func viewUser(u *persistence.User) userView { return userView{ID: u.ID, Email: u.Email, Name: u.Name} }

type tokensView struct {
	User         userView `json:"user"`
	Token        string   `json:"token"`
	RefreshToken string   `json:"refreshToken"`
	ExpiresIn    int      `json:"expiresIn"`
}

func viewTokens(t *Tokens) tokensView {
	return tokensView{User: viewUser(t.User), Token: t.Token, RefreshToken: t.RefreshToken, ExpiresIn: t.ExpiresIn}
}

// fieldChecks collects field problems so a request hears of all at once.
type fieldChecks []events.FieldError

func (f *fieldChecks) add(path, msg string) {
	*f = append(*f, events.FieldError{Path: path, Message: msg})
}

func (f fieldChecks) err() error {
	if len(f) == 0 {
		return nil
	}
	return events.Invalid(f)
}

func checkEmail(f *fieldChecks, email string) {
	switch a, err := mail.ParseAddress(email); {
	case email == "":
		f.add("email", "is required")
	case len(email) > 254 || err != nil || a.Address != email:
		f.add("email", "must be an email address")
	}
}

func (s *Server) register(c *fiber.Ctx) error {
	var req struct {
		Email    string `json:"email"`
		Password string `json:"password"`
		Name     string `json:"name"`
	}
	if err := decodeJSON(c.Body(), &req); err != nil {
		return err
	}
	var f fieldChecks
	checkEmail(&f, req.Email)
	switch {
	case utf8.RuneCountInString(req.Password) < 8:
		f.add("password", "must be at least 8 characters")
	case len(req.Password) > 72:
		f.add("password", "must be at most 72 bytes")
	}
	if n := utf8.RuneCountInString(req.Name); n == 0 || n > 100 {
		f.add("name", "is required, at most 100 characters")
	}
	if err := f.err(); err != nil {
		return err
	}
	t, err := s.auth.Register(c.UserContext(), req.Email, req.Password, req.Name)
	if err != nil {
		return err
	}
	return c.Status(fiber.StatusCreated).JSON(viewTokens(t))
}

func (s *Server) login(c *fiber.Ctx) error {
	var req struct {
		Email    string `json:"email"`
		Password string `json:"password"`
	}
	if err := decodeJSON(c.Body(), &req); err != nil {
		return err
	}
	var f fieldChecks
	if req.Email == "" {
		f.add("email", "is required")
	}
	if req.Password == "" {
		f.add("password", "is required")
	}
	if err := f.err(); err != nil {
		return err
	}
	t, err := s.auth.Login(c.UserContext(), req.Email, req.Password)
	if err != nil {
		return err
	}
	return c.JSON(viewTokens(t))
}

func (s *Server) refresh(c *fiber.Ctx) error {
	var req struct {
		RefreshToken string `json:"refreshToken"`
	}
	if err := decodeJSON(c.Body(), &req); err != nil {
		return err
	}
	if req.RefreshToken == "" {
		return events.Invalid([]events.FieldError{{Path: "refreshToken", Message: "is required"}})
	}
	t, err := s.auth.Refresh(c.UserContext(), req.RefreshToken)
	if err != nil {
		return err
	}
	return c.JSON(viewTokens(t))
}

func (s *Server) me(c *fiber.Ctx) error {
	u, err := s.deps.Store.UserByID(c.UserContext(), principal(c).UserID)
	if events.IsNotFound(err) {
		return events.Errorf(events.CodeUnauthorized, "the account no longer exists")
	}
	if err != nil {
		return err
	}
	return c.JSON(viewUser(u))
}

func (s *Server) logout(c *fiber.Ctx) error {
	p := principal(c)
	if p.SessionID == "" {
		return events.Errorf(events.CodeInvalid, "an API key has no session; delete the key instead")
	}
	if err := s.auth.Logout(c.UserContext(), p.SessionID); err != nil {
		return err
	}
	return c.SendStatus(fiber.StatusNoContent)
}

type apiKeyView struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	Key       string    `json:"key,omitempty"`
	Prefix    string    `json:"prefix"`
	CreatedAt time.Time `json:"createdAt"`
}

func (s *Server) createAPIKey(c *fiber.Ctx) error {
	var req struct {
		Name string `json:"name"`
	}
	if err := decodeJSON(c.Body(), &req); err != nil {
		return err
	}
	if n := utf8.RuneCountInString(req.Name); n == 0 || n > 100 {
		return events.Invalid([]events.FieldError{{Path: "name", Message: "is required, at most 100 characters"}})
	}
	k, secret, err := s.auth.CreateAPIKey(c.UserContext(), principal(c).UserID, req.Name)
	if err != nil {
		return err
	}
	return c.Status(fiber.StatusCreated).JSON(apiKeyView{ID: k.ID, Name: k.Name, Key: secret, Prefix: k.Prefix, CreatedAt: k.CreatedAt})
}

func (s *Server) listAPIKeys(c *fiber.Ctx) error {
	keys, err := s.deps.Store.ListAPIKeys(c.UserContext(), principal(c).UserID)
	if err != nil {
		return err
	}
	items := make([]apiKeyView, 0, len(keys))
	for _, k := range keys {
		items = append(items, apiKeyView{ID: k.ID, Name: k.Name, Prefix: k.Prefix, CreatedAt: k.CreatedAt})
	}
	return c.JSON(fiber.Map{"items": items})
}

func (s *Server) deleteAPIKey(c *fiber.Ctx) error {
	if err := s.auth.DeleteAPIKey(c.UserContext(), principal(c).UserID, c.Params("id")); err != nil {
		return err
	}
	return c.SendStatus(fiber.StatusNoContent)
}
