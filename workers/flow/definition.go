package flow

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/weftdev/weft/events"
)

// Node types, as stored after normalisation to upper case.
const (
	TypeInput       = "INPUT"
	TypeAIProcessor = "AI_PROCESSOR"
	TypeHTTPRequest = "HTTP_REQUEST"
	TypeDatabase    = "DATABASE"
	TypeTransform   = "TRANSFORM"
	TypeCondition   = "CONDITION"
	TypeOutput      = "OUTPUT"
)

// NodeTypes lists every node type in a stable order.
var NodeTypes = []string{TypeInput, TypeAIProcessor, TypeHTTPRequest, TypeDatabase, TypeTransform, TypeCondition, TypeOutput}

// Size limits of a definition, enforced by Parse and Compile.
const (
	MaxNameLen        = 200  // runes in Definition.Name
	MaxDescriptionLen = 2000 // runes in Definition.Description
	MaxNodes          = 200  // nodes in one definition
	MaxEdges          = 1000 // edges in one definition
)

// Definition is a workflow as saved and served.
type Definition struct {
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
	Nodes       []Node `json:"nodes"`
	Edges       []Edge `json:"edges"`
}

// Node is one step of a workflow; Config holds the type's settings as plain JSON values.
type Node struct {
	ID     string         `json:"id"`
	Type   string         `json:"type"`
	Config map[string]any `json:"config,omitempty"`
}

// Edge orders two nodes; Branch ("true" or "false") is set exactly on edges leaving a CONDITION.
type Edge struct {
	From   string `json:"from"`
	To     string `json:"to"`
	Branch string `json:"branch,omitempty"`
}

// Parse decodes and validates a definition body. It reports every problem it can find, each with its JSON path,
// and returns the normalised definition (node types and HTTP methods upper-cased, absent edges as an empty list)
// when there are none.
func Parse(body []byte) (*Definition, []events.FieldError) {
	dec := json.NewDecoder(bytes.NewReader(body))
	var raw any
	if err := dec.Decode(&raw); err != nil {
		return nil, []events.FieldError{syntaxError(err, body)}
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, []events.FieldError{{Path: "", Message: fmt.Sprintf("unexpected data after the JSON object at byte offset %d", dec.InputOffset())}}
	}
	def, shapeErrs := decode(raw)
	if def == nil {
		return nil, shapeErrs
	}
	_, semErrs := build(def)
	errs := mergeErrors(shapeErrs, semErrs)
	if len(errs) > 0 {
		return nil, errs
	}
	return def, nil
}

// syntaxError turns a JSON decoding failure into a FieldError at the root naming the byte offset.
func syntaxError(err error, body []byte) events.FieldError {
	var se *json.SyntaxError
	switch {
	case errors.As(err, &se):
		// Offset counts the bytes read, the offending one included; report where that byte is (from 0).
		return events.FieldError{Path: "", Message: fmt.Sprintf("malformed JSON at byte offset %d: %s", max(se.Offset-1, 0), se.Error())}
	case errors.Is(err, io.EOF):
		return events.FieldError{Path: "", Message: "body is empty; a JSON object is required"}
	case errors.Is(err, io.ErrUnexpectedEOF):
		return events.FieldError{Path: "", Message: fmt.Sprintf("malformed JSON at byte offset %d: unexpected end of input", len(body))}
	default:
		return events.FieldError{Path: "", Message: "malformed JSON: " + err.Error()}
	}
}

// mergeErrors appends semantic errors to shape errors, dropping those at or under a path that already has a
// shape error, so that one wrong type is not also reported as, say, a missing value.
func mergeErrors(shape, sem []events.FieldError) []events.FieldError {
	out := shape
	for _, e := range sem {
		covered := false
		for _, s := range shape {
			if under(e.Path, s.Path) {
				covered = true
				break
			}
		}
		if !covered {
			out = append(out, e)
		}
	}
	return out
}

// under reports whether path is prefix or lies below it.
func under(path, prefix string) bool {
	if prefix == "" || path == prefix {
		return true
	}
	if !strings.HasPrefix(path, prefix) {
		return false
	}
	c := path[len(prefix)]
	return c == '.' || c == '['
}

// decode checks the JSON shape of a definition (which fields exist and their JSON types) and builds it.
// It returns nil only when the body is not an object.
func decode(raw any) (*Definition, []events.FieldError) {
	var c collector
	obj, ok := raw.(map[string]any)
	if !ok {
		c.add("", "must be a JSON object, got %s", jsonKind(raw))
		return nil, c.errs
	}
	def := &Definition{Edges: []Edge{}}
	for _, k := range sortedKeys(obj) {
		switch k {
		case "name", "description", "nodes", "edges":
		default:
			c.add(k, "unknown field")
		}
	}
	if v, ok := obj["name"]; ok && v != nil {
		def.Name, _ = c.str("name", v)
	}
	if v, ok := obj["description"]; ok && v != nil {
		def.Description, _ = c.str("description", v)
	}
	if v, ok := obj["nodes"]; ok && v != nil {
		if arr, ok := c.array("nodes", v); ok {
			if len(arr) > MaxNodes {
				c.add("nodes", "at most %d nodes are allowed, got %d", MaxNodes, len(arr))
			} else {
				def.Nodes = make([]Node, len(arr))
				for i, n := range arr {
					def.Nodes[i] = decodeNode(&c, fmt.Sprintf("nodes[%d]", i), n)
				}
			}
		}
	}
	if v, ok := obj["edges"]; ok && v != nil {
		if arr, ok := c.array("edges", v); ok {
			if len(arr) > MaxEdges {
				c.add("edges", "at most %d edges are allowed, got %d", MaxEdges, len(arr))
			} else {
				def.Edges = make([]Edge, len(arr))
				for i, e := range arr {
					def.Edges[i] = decodeEdge(&c, fmt.Sprintf("edges[%d]", i), e)
				}
			}
		}
	}
	return def, c.errs
}

func decodeNode(c *collector, path string, raw any) Node {
	var n Node
	m, ok := c.object(path, raw)
	if !ok {
		return n
	}
	for _, k := range sortedKeys(m) {
		switch k {
		case "id", "type", "config":
		default:
			c.add(at(path, k), "unknown field")
		}
	}
	if v, ok := m["id"]; ok && v != nil {
		n.ID, _ = c.str(at(path, "id"), v)
	}
	if v, ok := m["type"]; ok && v != nil {
		t, _ := c.str(at(path, "type"), v)
		n.Type = strings.ToUpper(t)
	}
	if v, ok := m["config"]; ok && v != nil {
		n.Config, _ = c.object(at(path, "config"), v)
		if len(n.Config) == 0 {
			n.Config = nil // {} and an absent config are the same; keep one form so definitions round-trip
		}
	}
	if n.Type == TypeHTTPRequest {
		if s, ok := n.Config["method"].(string); ok {
			n.Config["method"] = strings.ToUpper(s)
		}
	}
	return n
}

func decodeEdge(c *collector, path string, raw any) Edge {
	var e Edge
	m, ok := c.object(path, raw)
	if !ok {
		return e
	}
	for _, k := range sortedKeys(m) {
		switch k {
		case "from", "to", "branch":
		default:
			c.add(at(path, k), "unknown field")
		}
	}
	if v, ok := m["from"]; ok && v != nil {
		e.From, _ = c.str(at(path, "from"), v)
	}
	if v, ok := m["to"]; ok && v != nil {
		e.To, _ = c.str(at(path, "to"), v)
	}
	switch v := m["branch"].(type) {
	case nil:
	case bool: // a JSON boolean is accepted and stored as its string form
		e.Branch = fmt.Sprint(v)
	case string:
		e.Branch = v
	default:
		c.add(at(path, "branch"), `must be "true" or "false", got %s`, jsonKind(v))
	}
	return e
}

// collector gathers FieldErrors while walking a definition.
type collector struct {
	errs []events.FieldError
}

func (c *collector) add(path, format string, args ...any) {
	c.errs = append(c.errs, events.FieldError{Path: path, Message: fmt.Sprintf(format, args...)})
}

func (c *collector) str(path string, v any) (string, bool) {
	s, ok := v.(string)
	if !ok {
		c.add(path, "must be a string, got %s", jsonKind(v))
	}
	return s, ok
}

func (c *collector) object(path string, v any) (map[string]any, bool) {
	m, ok := v.(map[string]any)
	if !ok {
		c.add(path, "must be an object, got %s", jsonKind(v))
	}
	return m, ok
}

func (c *collector) array(path string, v any) ([]any, bool) {
	a, ok := v.([]any)
	if !ok {
		c.add(path, "must be an array, got %s", jsonKind(v))
	}
	return a, ok
}

// at joins a JSON path and an object key.
func at(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// index joins a JSON path and an array index.
func index(path string, i int) string {
	return fmt.Sprintf("%s[%d]", path, i)
}

// jsonKind names the JSON type of a decoded value for error messages.
func jsonKind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case string:
		return "a string"
	case bool:
		return "a boolean"
	case float64, float32, int, int64, int32, int16, int8, uint, uint64, uint32, uint16, uint8, json.Number:
		return "a number"
	case []any:
		return "an array"
	case map[string]any:
		return "an object"
	default:
		return fmt.Sprintf("%T", v)
	}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
