package flow

import (
	"strings"

	"github.com/weftdev/weft/events"
)

// InputField is one declared input of a workflow, from an INPUT node's fields.
type InputField struct {
	Type        string // string, number, boolean, object or array
	Required    bool
	Default     any  // applied when the input is absent or null, if HasDefault
	HasDefault  bool // a non-null default was declared
	Description string
}

// Inputs returns the input fields declared by the definition's INPUT nodes, merged by name (the first
// declaration wins). It is empty when there is no INPUT node or none declares fields.
func (d *Definition) Inputs() map[string]InputField {
	out := map[string]InputField{}
	for _, n := range d.Nodes {
		if strings.ToUpper(n.Type) != TypeInput {
			continue
		}
		fields, _ := n.Config["fields"].(map[string]any)
		for name, raw := range fields {
			if _, seen := out[name]; seen {
				continue
			}
			spec, _ := raw.(map[string]any)
			f := InputField{}
			f.Type, _ = spec["type"].(string)
			f.Required, _ = spec["required"].(bool)
			f.Description, _ = spec["description"].(string)
			if d, ok := spec["default"]; ok && d != nil {
				f.Default, f.HasDefault = d, true
			}
			out[name] = f
		}
	}
	return out
}

// ValidateInputs checks an execution's inputs against the definition's declared fields: a required field must
// be present and not null, a present field must have its declared type, and an absent (or null) field with a
// default gets a copy of it. Undeclared inputs pass through unchanged. It returns a new map and every problem,
// each at "inputs.<name>".
func ValidateInputs(def *Definition, inputs map[string]any) (map[string]any, []events.FieldError) {
	fields := def.Inputs()
	return validateInputs(fields, sortedKeys(fields), inputs)
}

// ValidateInputs is ValidateInputs of the graph's definition, with its
// fields read once, when it was compiled (a graph made otherwise reads
// them now).
func (g *Graph) ValidateInputs(inputs map[string]any) (map[string]any, []events.FieldError) {
	if g.inputs == nil && g.Definition != nil {
		return ValidateInputs(g.Definition, inputs)
	}
	return validateInputs(g.inputs, g.inputNames, inputs)
}

// validateInputs checks inputs against fields, in the order of names.
func validateInputs(fields map[string]InputField, names []string, inputs map[string]any) (map[string]any, []events.FieldError) {
	out := make(map[string]any, len(inputs))
	for k, v := range inputs {
		out[k] = v
	}
	var c collector
	for _, name := range names {
		f := fields[name]
		p := at("inputs", name)
		v, present := inputs[name]
		if !present || v == nil {
			switch {
			case f.HasDefault:
				out[name] = deepCopy(f.Default)
			case f.Required:
				c.add(p, "is required (%s)", f.Type)
			}
			continue
		}
		if !hasInputType(v, f.Type) {
			c.add(p, "must be of type %s, got %s", f.Type, jsonKind(v))
		}
	}
	if len(c.errs) > 0 {
		return nil, c.errs
	}
	return out, nil
}

// hasInputType reports whether v, a decoded JSON value, is of the declared input type.
func hasInputType(v any, typ string) bool {
	switch typ {
	case "string":
		_, ok := v.(string)
		return ok
	case "number":
		_, ok := asNumber(v)
		return ok
	case "boolean":
		_, ok := v.(bool)
		return ok
	case "object":
		_, ok := v.(map[string]any)
		return ok
	case "array":
		_, ok := v.([]any)
		return ok
	}
	return true
}

// deepCopy copies maps and slices of a decoded JSON value so that callers cannot alter the definition.
func deepCopy(v any) any {
	switch x := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = deepCopy(e)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = deepCopy(e)
		}
		return out
	default:
		return v
	}
}
