package flow

import (
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
)

// Template is a config string with embedded {{ expr }} parts, compiled once and rendered per execution.
type Template struct {
	source string
	parts  []templatePart
	lone   *Expr // set when the string is exactly one {{ expr }}, optionally surrounded by whitespace
	refs   []string
}

// templatePart is either literal text or an expression.
type templatePart struct {
	text string
	expr *Expr
}

// HasTemplate reports whether s contains "{{" and so is compiled as a template.
func HasTemplate(s string) bool { return strings.Contains(s, "{{") }

// CompileTemplate compiles s, whose {{ }} parts are expressions under CompileExpr's rules. "{{" without a
// matching "}}" is an error; "}}" inside a string literal or a map literal of the expression does not close it.
func CompileTemplate(s string) (*Template, error) {
	t := &Template{source: s}
	refs := map[string]bool{}
	for i := 0; i < len(s); {
		j := strings.Index(s[i:], "{{")
		if j < 0 {
			t.parts = append(t.parts, templatePart{text: s[i:]})
			break
		}
		if j > 0 {
			t.parts = append(t.parts, templatePart{text: s[i : i+j]})
		}
		start := i + j + 2
		end := exprEnd(s, start)
		if end < 0 {
			return nil, fmt.Errorf("unclosed {{ at byte offset %d", i+j)
		}
		src := s[start:end]
		e, err := CompileExpr(src)
		if err != nil {
			return nil, fmt.Errorf("in {{%s}}: %w", truncate(src, 80), err)
		}
		for _, r := range e.refs {
			refs[r] = true
		}
		t.parts = append(t.parts, templatePart{expr: e})
		i = end + 2
	}
	var exprs int
	var other bool
	for _, p := range t.parts {
		switch {
		case p.expr != nil:
			exprs++
			t.lone = p.expr
		case strings.TrimSpace(p.text) != "":
			other = true
		}
	}
	if exprs != 1 || other {
		t.lone = nil
	}
	for r := range refs {
		t.refs = append(t.refs, r)
	}
	sort.Strings(t.refs)
	return t, nil
}

// exprEnd returns the offset of the "}}" closing an expression that starts at start, or -1. It skips string
// literals and balanced braces, so {{ {"a": {"b": 1}} }} and {{ "}}" }} close where a reader expects.
func exprEnd(s string, start int) int {
	depth := 0
	for k := start; k < len(s); k++ {
		switch c := s[k]; c {
		case '"', '\'', '`':
			k = stringEnd(s, k)
			if k < 0 {
				return -1
			}
		case '{':
			depth++
		case '}':
			if depth > 0 {
				depth--
			} else if k+1 < len(s) && s[k+1] == '}' {
				return k
			}
		}
	}
	return -1
}

// stringEnd returns the offset of the quote closing the literal opened at s[open], or -1.
func stringEnd(s string, open int) int {
	q := s[open]
	for k := open + 1; k < len(s); k++ {
		switch s[k] {
		case '\\':
			if q != '`' {
				k++
			}
		case q:
			return k
		}
	}
	return -1
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// Source returns the template's text.
func (t *Template) Source() string { return t.source }

// Refs returns the sorted ids of the nodes the template reads.
func (t *Template) Refs() []string { return t.refs }

// Lone reports whether the template is exactly one {{ expr }} and so renders to the expression's value, keeping its type.
func (t *Template) Lone() bool { return t.lone != nil }

// Render evaluates the template against scope: a lone expression yields its value as is; otherwise literal
// text and results are concatenated, strings as they are and other values as JSON, up to MaxRenderBytes.
func (t *Template) Render(scope Scope) (any, error) {
	budget := MaxRenderBytes
	env, b := scope.bounds()
	return t.render(env, b, &budget)
}

func (t *Template) render(env map[string]any, bud *budget, budget *int) (any, error) {
	if t.lone != nil {
		return t.lone.run(env, bud)
	}
	var b strings.Builder
	for _, p := range t.parts {
		s := p.text
		if p.expr != nil {
			v, err := p.expr.run(env, bud)
			if err != nil {
				return nil, err
			}
			if _, ok := v.(string); !ok && SizeAtLeast(v, *budget) > *budget {
				return nil, fmt.Errorf("rendered text exceeds %d bytes", MaxRenderBytes)
			}
			if s, err = stringify(v); err != nil {
				return nil, fmt.Errorf("rendering {{%s}}: %w", truncate(p.expr.source, 80), err)
			}
		}
		if len(s) > *budget {
			return nil, fmt.Errorf("rendered text exceeds %d bytes", MaxRenderBytes)
		}
		*budget -= len(s)
		b.WriteString(s)
	}
	return b.String(), nil
}

// stringify turns an expression result into text for concatenation: strings as they are, others as JSON.
func stringify(v any) (string, error) {
	if s, ok := v.(string); ok {
		return s, nil
	}
	raw, err := json.Marshal(v)
	if err != nil {
		return "", errors.New("the value cannot be written as JSON")
	}
	return string(raw), nil
}

// CompileValue copies a JSON value, replacing every string that contains {{ by its compiled Template, so
// that Render can evaluate it later. It reports the first template that does not compile.
func CompileValue(v any) (any, error) {
	var c collector
	out := compileValue(&c, "", v)
	if len(c.errs) > 0 {
		e := c.errs[0]
		if e.Path == "" {
			return nil, errors.New(e.Message)
		}
		return nil, fmt.Errorf("%s: %s", e.Path, e.Message)
	}
	return out, nil
}

// compileValue is CompileValue reporting every bad template by path.
func compileValue(c *collector, path string, v any) any {
	switch x := v.(type) {
	case string:
		if !HasTemplate(x) {
			return x
		}
		t, err := CompileTemplate(x)
		if err != nil {
			c.add(path, "%s", err.Error())
			return x
		}
		return t
	case map[string]any:
		out := make(map[string]any, len(x))
		for _, k := range sortedKeys(x) {
			out[k] = compileValue(c, at(path, k), x[k])
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = compileValue(c, index(path, i), e)
		}
		return out
	default:
		return v
	}
}

// Render evaluates the templates inside a value made by CompileValue (or a compiled node's Params) against
// scope and returns a fresh copy with each Template replaced by its result. Strings rendered by concatenation
// may total at most MaxRenderBytes per call. Values that are not templates are returned as they are.
func Render(value any, scope Scope) (any, error) {
	budget := MaxRenderBytes
	env, b := scope.bounds()
	return render(value, env, b, &budget)
}

func render(v any, env map[string]any, b *budget, budget *int) (any, error) {
	switch x := v.(type) {
	case *Template:
		return x.render(env, b, budget)
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			r, err := render(e, env, b, budget)
			if err != nil {
				return nil, err
			}
			out[k] = r
		}
		return out, nil
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			r, err := render(e, env, b, budget)
			if err != nil {
				return nil, err
			}
			out[i] = r
		}
		return out, nil
	default:
		return v, nil
	}
}

// collectRefs adds the node ids read by the templates inside a compiled value to refs, each with its path.
func collectRefs(v any, path string, add func(id, path string)) {
	switch x := v.(type) {
	case *Template:
		for _, r := range x.refs {
			add(r, path)
		}
	case map[string]any:
		for _, k := range sortedKeys(x) {
			collectRefs(x[k], at(path, k), add)
		}
	case []any:
		for i, e := range x {
			collectRefs(e, index(path, i), add)
		}
	}
}
