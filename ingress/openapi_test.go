package ingress

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gofiber/fiber/v2/middleware/adaptor"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"
	"golang.org/x/crypto/bcrypt"

	"github.com/weftdev/weft/events"
	"github.com/weftdev/weft/events/natstest"
	"github.com/weftdev/weft/persistence/sqlite"
)

// openAPIDoc is the part of the spec the tests read.
type openAPIDoc struct {
	OpenAPI    string                    `yaml:"openapi"`
	Info       map[string]any            `yaml:"info"`
	Paths      map[string]map[string]any `yaml:"paths"`
	Components map[string]any            `yaml:"components"`
}

var openAPIMethods = []string{"get", "put", "post", "delete", "options", "head", "patch", "trace"}

func loadOpenAPI(t *testing.T) (openAPIDoc, map[string]any) {
	t.Helper()
	var doc openAPIDoc
	require.NoError(t, yaml.Unmarshal(openAPISpec, &doc), "ingress/openapi.yaml parses")
	var tree map[string]any
	require.NoError(t, yaml.Unmarshal(openAPISpec, &tree))
	return doc, tree
}

func TestOpenAPIDocument(t *testing.T) {
	t.Parallel()
	doc, tree := loadOpenAPI(t)
	require.True(t, strings.HasPrefix(doc.OpenAPI, "3.1."), "openapi is %q, want 3.1.x", doc.OpenAPI)
	require.NotEmpty(t, doc.Info["title"])
	require.NotEmpty(t, doc.Info["version"])
	require.NotEmpty(t, doc.Paths)

	// Every local $ref points at something.
	var walk func(at string, v any)
	walk = func(at string, v any) {
		switch x := v.(type) {
		case map[string]any:
			if ref, ok := x["$ref"].(string); ok {
				require.True(t, strings.HasPrefix(ref, "#/"), "%s: $ref %q is not local", at, ref)
				require.NotNil(t, resolvePointer(tree, ref), "%s: $ref %q resolves to nothing", at, ref)
			}
			for k, e := range x {
				walk(at+"/"+k, e)
			}
		case []any:
			for _, e := range x {
				walk(at+"[]", e)
			}
		}
	}
	walk("#", tree)

	// Every operation answers something, and every path template names a
	// path parameter it declares.
	tmpl := regexp.MustCompile(`\{([^}]+)\}`)
	for path, item := range doc.Paths {
		for method, v := range item {
			if !slices.Contains(openAPIMethods, method) {
				continue
			}
			op, _ := v.(map[string]any)
			require.NotEmpty(t, op["responses"], "%s %s has no responses", method, path)
			var declared []string
			for _, list := range []any{item["parameters"], op["parameters"]} {
				ps, _ := list.([]any)
				for _, p := range ps {
					pm, _ := p.(map[string]any)
					if ref, ok := pm["$ref"].(string); ok {
						pm, _ = resolvePointer(tree, ref).(map[string]any)
					}
					if pm["in"] == "path" {
						declared = append(declared, pm["name"].(string))
					}
				}
			}
			for _, m := range tmpl.FindAllStringSubmatch(path, -1) {
				require.Contains(t, declared, m[1], "%s %s does not declare path parameter %s", method, path, m[1])
			}
		}
	}

	// The error schema is what errorHandler writes.
	raw, err := json.Marshal(errorBody{Error: errorPayload{Code: "c", Message: "m", Details: []events.FieldError{{Path: "p", Message: "m"}}}})
	require.NoError(t, err)
	var body map[string]map[string]any
	require.NoError(t, json.Unmarshal(raw, &body))
	specPayload := resolvePointer(tree, "#/components/schemas/ErrorPayload").(map[string]any)
	require.ElementsMatch(t, keys(body["error"]), keys(specPayload["properties"].(map[string]any)))
	detail := body["error"]["details"].([]any)[0].(map[string]any)
	specDetail := resolvePointer(tree, "#/components/schemas/FieldError").(map[string]any)
	require.ElementsMatch(t, keys(detail), keys(specDetail["properties"].(map[string]any)))
}

// TestOpenAPIRoutes checks that the spec lists exactly the routes a server
// registers, each with its method.
func TestOpenAPIRoutes(t *testing.T) {
	t.Parallel()
	s := newRouteTestServer(t)
	doc, _ := loadOpenAPI(t)

	inSpec := map[string]bool{}
	for path, item := range doc.Paths {
		for method := range item {
			if slices.Contains(openAPIMethods, method) {
				inSpec[strings.ToUpper(method)+" "+path] = true
			}
		}
	}
	param := regexp.MustCompile(`:([A-Za-z0-9_]+)`)
	registered := map[string]bool{}
	for _, r := range s.app.GetRoutes(true) {
		registered[r.Method+" "+param.ReplaceAllString(r.Path, "{$1}")] = true
	}
	require.NotEmpty(t, registered)
	for route := range registered {
		method, path, _ := strings.Cut(route, " ")
		if method == http.MethodHead && registered[http.MethodGet+" "+path] && !inSpec[route] {
			continue // Fiber answers HEAD on every GET route; the spec says so once
		}
		require.True(t, inSpec[route], "the server registers %s but ingress/openapi.yaml does not describe it", route)
	}
	for route := range inSpec {
		require.True(t, registered[route], "ingress/openapi.yaml describes %s but the server does not register it", route)
	}

	// The spec is served, without credentials, as YAML.
	// (Through the app's handler: app.Test would start fasthttp's
	// process-wide date ticker, which goleak reports.)
	rec := httptest.NewRecorder()
	adaptor.FiberApp(s.app)(rec, httptest.NewRequest(http.MethodGet, "/openapi.yaml", nil))
	require.Equal(t, http.StatusOK, rec.Code)
	require.Equal(t, "application/yaml", rec.Header().Get("Content-Type"))
	require.Equal(t, openAPISpec, rec.Body.Bytes())
}

// noGraphs stands in for the graph compiler; listing routes never calls it.
type noGraphs struct{ Graphs }

// newRouteTestServer builds a Server on an in-process nats-server and a
// SQLite store: enough for New to register its routes.
func newRouteTestServer(t *testing.T) *Server {
	t.Helper()
	ctx := context.Background()
	db, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "weft.db"))
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	nc, js := natstest.Connect(t, natstest.Start(t))
	s, err := New(Config{Auth: AuthConfig{Secret: []byte(strings.Repeat("s", 32)), BcryptCost: bcrypt.MinCost}},
		Deps{Store: db, NC: nc, JS: js, Graphs: noGraphs{}})
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.Shutdown(ctx) // never served: only the subscriptions need stopping
	})
	return s
}

// resolvePointer follows a local JSON pointer ("#/a/b") through a decoded
// YAML tree; nil when it leads nowhere.
func resolvePointer(tree map[string]any, ref string) any {
	var cur any = tree
	for _, part := range strings.Split(strings.TrimPrefix(ref, "#/"), "/") {
		part = strings.ReplaceAll(strings.ReplaceAll(part, "~1", "/"), "~0", "~")
		m, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		if cur, ok = m[part]; !ok {
			return nil
		}
	}
	return cur
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}
