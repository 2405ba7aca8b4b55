package ingress

import (
	_ "embed"

	"github.com/gofiber/fiber/v2"
)

// openAPISpec is the OpenAPI 3.1 description of the HTTP API, served at
// GET /openapi.yaml. openapi_test.go checks that it lists exactly the routes
// the server registers.
//
//go:embed openapi.yaml
var openAPISpec []byte

// openAPI serves the spec. It needs no credential.
func (s *Server) openAPI(c *fiber.Ctx) error {
	c.Set(fiber.HeaderContentType, "application/yaml")
	return c.Send(openAPISpec)
}
