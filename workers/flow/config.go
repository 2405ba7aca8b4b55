package flow

import (
	"encoding/json"
	"math"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"
)

// Config limits and value sets.
const (
	MaxRetryAttempts     = 10        // retry.maxAttempts upper bound
	MaxBackoffMs         = 600_000   // retry.backoffMs upper bound
	MaxTimeoutMs         = 3_600_000 // timeoutMs upper bound
	MaxAITokens          = 32768     // AI_PROCESSOR maxTokens upper bound
	MaxDatabaseLimit     = 1000      // DATABASE limit upper bound
	MaxInsertDocuments   = 1000      // DATABASE documents per insertMany
	MaxResponseBytesCap  = 100 << 20 // HTTP_REQUEST maxResponseBytes upper bound
	maxInputFieldNameLen = 200
)

var (
	idPattern         = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,63}$`)
	collectionPattern = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_]{0,63}$`)

	httpMethods  = []string{"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"}
	taskTypes    = []string{"content_generation", "quick_decision", "sentiment_analysis", "math_reasoning", "long_context", "code_generation"}
	providers    = []string{"gemini", "groq", "huggingface", "glm", "kimi", "qwen"}
	inputTypes   = []string{"string", "number", "boolean", "object", "array"}
	onErrorModes = []string{"fail", "continue"}

	commonKeys = []string{"retry", "timeoutMs", "onError"}
	typeKeys   = map[string][]string{
		TypeInput:       {"fields"},
		TypeAIProcessor: {"taskType", "prompt", "system", "temperature", "maxTokens", "provider", "cache"},
		TypeHTTPRequest: {"method", "url", "headers", "query", "body", "failOnStatus", "maxResponseBytes"},
		TypeDatabase:    {"operation", "collection", "document", "documents", "filter", "update", "sort", "limit", "projection"},
		TypeTransform:   {"set"},
		TypeCondition:   {"expression"},
		TypeOutput:      {"value"},
	}
	// dbKeys lists the keys each DATABASE operation uses besides operation and collection.
	dbKeys = map[string][]string{
		"insertOne":  {"document"},
		"insertMany": {"documents"},
		"findOne":    {"filter", "sort", "projection"},
		"find":       {"filter", "sort", "limit", "projection"},
		"updateOne":  {"filter", "update"},
		"updateMany": {"filter", "update"},
		"deleteOne":  {"filter"},
		"deleteMany": {"filter"},
		"count":      {"filter", "limit"},
	}
	dbOperations     = []string{"insertOne", "insertMany", "findOne", "find", "updateOne", "updateMany", "deleteOne", "deleteMany", "count"}
	filterOperators  = []string{"$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$exists", "$and", "$or", "$not"}
	updateOperators  = []string{"$set", "$unset", "$inc", "$push"}
	compareOperators = []string{"$eq", "$ne", "$gt", "$gte", "$lt", "$lte"}
)

// ref is a node id read by an expression, with the path of the expression for error reports.
type ref struct{ id, path string }

// configChecker validates one node's config and fills in its compiled form.
type configChecker struct {
	*collector
	node *CompiledNode
	refs []ref
}

func (c *configChecker) addRefs(path string, ids []string) {
	for _, id := range ids {
		c.refs = append(c.refs, ref{id: id, path: path})
	}
}

// check validates cfg (the config of a node of a known type at path) and compiles its expressions and templates.
func (c *configChecker) check(path string, cfg map[string]any) {
	n := c.node
	allowed := typeKeys[n.Type]
	for _, k := range sortedKeys(cfg) {
		if !slices.Contains(commonKeys, k) && !slices.Contains(allowed, k) {
			c.add(at(path, k), "unknown config key for %s; allowed: %s", n.Type, strings.Join(append(slices.Clone(allowed), commonKeys...), ", "))
		}
	}
	c.common(path, cfg)
	switch n.Type {
	case TypeInput:
		if v, ok := cfg["fields"]; ok {
			c.inputFields(at(path, "fields"), v)
		}
	case TypeTransform:
		c.transform(path, cfg)
	case TypeCondition:
		c.condition(path, cfg)
	case TypeHTTPRequest:
		c.http(path, cfg)
	case TypeDatabase:
		c.database(path, cfg)
	case TypeAIProcessor:
		c.ai(path, cfg)
	case TypeOutput:
		if _, ok := cfg["value"]; !ok {
			c.add(at(path, "value"), "is required")
		}
	}
	switch n.Type {
	case TypeInput, TypeTransform, TypeCondition:
		// INPUT defaults are literal values applied at submit time, when there is nothing to render them
		// against; CONDITION and TRANSFORM hold bare expressions.
		n.Params = cfg
	default:
		params, _ := compileValue(c.collector, path, cfg).(map[string]any)
		n.Params = params
		collectRefs(params, path, func(id, p string) { c.refs = append(c.refs, ref{id: id, path: p}) })
	}
}

func (c *configChecker) common(path string, cfg map[string]any) {
	n := c.node
	n.Retry = RetryPolicy{MaxAttempts: 1}
	n.OnError = "fail"
	if v, ok := cfg["retry"]; ok {
		p := at(path, "retry")
		if m, ok := c.object(p, v); ok {
			for _, k := range sortedKeys(m) {
				switch k {
				case "maxAttempts":
					if i, ok := c.intIn(at(p, k), m[k], 1, MaxRetryAttempts); ok {
						n.Retry.MaxAttempts = int(i)
					}
				case "backoffMs":
					if i, ok := c.intIn(at(p, k), m[k], 0, MaxBackoffMs); ok {
						n.Retry.Backoff = time.Duration(i) * time.Millisecond
					}
				default:
					c.add(at(p, k), "unknown key; allowed: maxAttempts, backoffMs")
				}
			}
		}
	}
	if v, ok := cfg["timeoutMs"]; ok {
		if i, ok := c.intIn(at(path, "timeoutMs"), v, 1, MaxTimeoutMs); ok {
			n.Timeout = time.Duration(i) * time.Millisecond
		}
	}
	if v, ok := cfg["onError"]; ok {
		if s, ok := c.enum(at(path, "onError"), v, onErrorModes); ok {
			n.OnError = s
		}
	}
}

func (c *configChecker) inputFields(path string, v any) {
	m, ok := c.object(path, v)
	if !ok {
		return
	}
	for _, name := range sortedKeys(m) {
		p := at(path, name)
		if name == "" || len(name) > maxInputFieldNameLen {
			c.add(p, "field names must be 1 to %d bytes long", maxInputFieldNameLen)
		}
		spec, ok := c.object(p, m[name])
		if !ok {
			continue
		}
		for _, k := range sortedKeys(spec) {
			switch k {
			case "type", "required", "default", "description":
			default:
				c.add(at(p, k), "unknown key; allowed: type, required, default, description")
			}
		}
		typ, hasType := spec["type"]
		if !hasType {
			c.add(at(p, "type"), "is required; one of %s", strings.Join(inputTypes, ", "))
		}
		t, typeOK := "", false
		if hasType {
			t, typeOK = c.enum(at(p, "type"), typ, inputTypes)
		}
		if r, ok := spec["required"]; ok {
			c.boolean(at(p, "required"), r)
		}
		if d, ok := spec["description"]; ok {
			c.str(at(p, "description"), d)
		}
		if d, ok := spec["default"]; ok && typeOK && d != nil && !hasInputType(d, t) {
			c.add(at(p, "default"), "must be of type %s, got %s", t, jsonKind(d))
		}
	}
}

func (c *configChecker) transform(path string, cfg map[string]any) {
	p := at(path, "set")
	v, ok := cfg["set"]
	if !ok {
		c.add(p, "is required: a map of output name to expression")
		return
	}
	m, ok := c.object(p, v)
	if !ok {
		return
	}
	if len(m) == 0 {
		c.add(p, "must name at least one output")
		return
	}
	c.node.Set = make(map[string]*Expr, len(m))
	for _, k := range sortedKeys(m) {
		kp := at(p, k)
		if k == "" {
			c.add(kp, "output names must not be empty")
			continue
		}
		src, ok := c.str(kp, m[k])
		if !ok {
			continue
		}
		e, err := CompileExpr(src)
		if err != nil {
			c.add(kp, "%s", err.Error())
			continue
		}
		c.node.Set[k] = e
		c.addRefs(kp, e.refs)
	}
}

func (c *configChecker) condition(path string, cfg map[string]any) {
	p := at(path, "expression")
	v, ok := cfg["expression"]
	if !ok {
		c.add(p, "is required: a boolean expression")
		return
	}
	src, ok := c.str(p, v)
	if !ok {
		return
	}
	e, err := compileExpr(src, true)
	if err != nil {
		c.add(p, "%s", err.Error())
		return
	}
	c.node.Expression = e
	c.addRefs(p, e.refs)
}

func (c *configChecker) http(path string, cfg map[string]any) {
	if v, ok := cfg["method"]; ok {
		c.enum(at(path, "method"), v, httpMethods)
	}
	up := at(path, "url")
	if v, ok := cfg["url"]; !ok {
		c.add(up, "is required")
	} else if s, ok := c.str(up, v); ok && HasTemplate(s) {
		// The URL is known only at run time, but a literal scheme can be checked now.
		prefix := s[:strings.Index(s, "{{")]
		if i := strings.Index(prefix, "://"); i >= 0 && !slices.Contains([]string{"http", "https"}, strings.ToLower(prefix[:i])) {
			c.add(up, "must be an absolute http or https URL")
		}
	} else if ok {
		u, err := url.Parse(s)
		switch {
		case s == "":
			c.add(up, "is required")
		case err != nil:
			c.add(up, "is not a valid URL")
		case u.Scheme != "http" && u.Scheme != "https":
			c.add(up, "must be an absolute http or https URL")
		case u.Host == "" || u.Hostname() == "":
			c.add(up, "must name a host")
		}
	}
	for _, k := range []string{"headers", "query"} {
		v, ok := cfg[k]
		if !ok {
			continue
		}
		p := at(path, k)
		m, ok := c.object(p, v)
		if !ok {
			continue
		}
		for _, name := range sortedKeys(m) {
			s, ok := c.str(at(p, name), m[name])
			if k != "headers" || !ok {
				continue
			}
			if !validHeaderName(name) {
				c.add(at(p, name), "is not a valid header name")
			} else if strings.ContainsAny(s, "\r\n\x00") {
				c.add(at(p, name), "header values must not contain line breaks")
			}
		}
	}
	if v, ok := cfg["failOnStatus"]; ok {
		c.boolean(at(path, "failOnStatus"), v)
	}
	if v, ok := cfg["maxResponseBytes"]; ok {
		c.intIn(at(path, "maxResponseBytes"), v, 1, MaxResponseBytesCap)
	}
}

// validHeaderName reports whether s is an RFC 9110 token.
func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		ch := s[i]
		switch {
		case ch >= 'a' && ch <= 'z', ch >= 'A' && ch <= 'Z', ch >= '0' && ch <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", ch) >= 0:
		default:
			return false
		}
	}
	return true
}

func (c *configChecker) ai(path string, cfg map[string]any) {
	if v, ok := cfg["taskType"]; ok {
		c.enum(at(path, "taskType"), v, taskTypes)
	} else {
		c.add(at(path, "taskType"), "is required; one of %s", strings.Join(taskTypes, ", "))
	}
	if v, ok := cfg["prompt"]; !ok {
		c.add(at(path, "prompt"), "is required")
	} else if s, ok := c.str(at(path, "prompt"), v); ok && strings.TrimSpace(s) == "" {
		c.add(at(path, "prompt"), "must not be empty")
	}
	if v, ok := cfg["system"]; ok {
		c.str(at(path, "system"), v)
	}
	if v, ok := cfg["temperature"]; ok {
		if f, ok := asNumber(v); !ok {
			c.add(at(path, "temperature"), "must be a number, got %s", jsonKind(v))
		} else if f < 0 || f > 2 {
			c.add(at(path, "temperature"), "must be between 0 and 2")
		}
	}
	if v, ok := cfg["maxTokens"]; ok {
		c.intIn(at(path, "maxTokens"), v, 1, MaxAITokens)
	}
	if v, ok := cfg["provider"]; ok {
		c.enum(at(path, "provider"), v, providers)
	}
	if v, ok := cfg["cache"]; ok {
		c.boolean(at(path, "cache"), v)
	}
}

func (c *configChecker) database(path string, cfg map[string]any) {
	op := ""
	if v, ok := cfg["operation"]; ok {
		op, _ = c.enum(at(path, "operation"), v, dbOperations)
	} else {
		c.add(at(path, "operation"), "is required; one of %s", strings.Join(dbOperations, ", "))
	}
	if v, ok := cfg["collection"]; !ok {
		c.add(at(path, "collection"), "is required")
	} else if s, ok := c.str(at(path, "collection"), v); ok && !HasTemplate(s) && !collectionPattern.MatchString(s) {
		c.add(at(path, "collection"), "must start with a letter and hold at most 64 letters, digits and underscores")
	}
	if op != "" {
		for _, k := range []string{"document", "documents", "filter", "update", "sort", "limit", "projection"} {
			if _, ok := cfg[k]; ok && !slices.Contains(dbKeys[op], k) {
				c.add(at(path, k), "is not used by %s", op)
			}
		}
		switch op {
		case "insertOne":
			if _, ok := cfg["document"]; !ok {
				c.add(at(path, "document"), "is required for insertOne")
			}
		case "insertMany":
			if _, ok := cfg["documents"]; !ok {
				c.add(at(path, "documents"), "is required for insertMany")
			}
		case "updateOne", "updateMany":
			if _, ok := cfg["update"]; !ok {
				c.add(at(path, "update"), "is required for %s", op)
			}
		}
	}
	if v, ok := cfg["document"]; ok {
		c.document(at(path, "document"), v)
	}
	if v, ok := cfg["documents"]; ok {
		p := at(path, "documents")
		if !c.loneTemplate(v) {
			if arr, ok := c.array(p, v); ok {
				switch {
				case len(arr) == 0:
					c.add(p, "must hold at least one document")
				case len(arr) > MaxInsertDocuments:
					c.add(p, "must hold at most %d documents, got %d", MaxInsertDocuments, len(arr))
				default:
					for i, d := range arr {
						c.document(index(p, i), d)
					}
				}
			}
		}
	}
	// filter, update, sort, limit and projection may each be one {{ expr }}
	// computed upstream; the node checks what it renders to.
	if v, ok := cfg["filter"]; ok && !c.loneTemplate(v) {
		if m, ok := c.object(at(path, "filter"), v); ok {
			c.filter(at(path, "filter"), m)
		}
	}
	if v, ok := cfg["update"]; ok && !c.loneTemplate(v) {
		c.update(at(path, "update"), v)
	}
	if v, ok := cfg["sort"]; ok && !c.loneTemplate(v) {
		c.sort(at(path, "sort"), v)
	}
	if v, ok := cfg["limit"]; ok && !c.loneTemplate(v) {
		c.intIn(at(path, "limit"), v, 1, MaxDatabaseLimit)
	}
	if v, ok := cfg["projection"]; ok && !c.loneTemplate(v) {
		c.fieldMap(at(path, "projection"), v, 0, 1, "must be 1 (include) or 0 (exclude)")
	}
}

// sort checks a sort: {"field": 1|-1} with one field, or a list of such objects in priority order. An object
// with several fields is refused because JSON decoding keeps no key order, so its priority would be a guess.
func (c *configChecker) sort(path string, v any) {
	if list, ok := v.([]any); ok {
		if len(list) == 0 {
			c.add(path, "must name at least one field")
		}
		for i, e := range list {
			p := index(path, i)
			if m, ok := c.object(p, e); ok {
				if len(m) != 1 {
					c.add(p, "must be an object with exactly one field, as in {\"createdAt\": -1}")
					continue
				}
				c.fieldMap(p, m, -1, 1, "must be 1 (ascending) or -1 (descending)")
			}
		}
		return
	}
	if m, ok := v.(map[string]any); ok && len(m) > 1 {
		c.add(path, "sorts by several fields must be a list in priority order, as in [{\"a\": 1}, {\"b\": -1}]")
		return
	}
	c.fieldMap(path, v, -1, 1, "must be 1 (ascending) or -1 (descending)")
}

// loneTemplate reports whether v is a string that is exactly one {{ expr }}, which may stand for a whole
// document or list of documents computed upstream. A bad template is reported later, by its path.
func (c *configChecker) loneTemplate(v any) bool {
	s, ok := v.(string)
	if !ok || !HasTemplate(s) {
		return false
	}
	t, err := CompileTemplate(s)
	return err != nil || t.Lone()
}

// document checks a document to insert: an object whose keys do not start with $.
func (c *configChecker) document(path string, v any) {
	if c.loneTemplate(v) {
		return
	}
	m, ok := c.object(path, v)
	if !ok {
		return
	}
	c.noOperatorKeys(path, m)
}

func (c *configChecker) noOperatorKeys(path string, v any) {
	switch x := v.(type) {
	case map[string]any:
		for _, k := range sortedKeys(x) {
			if strings.HasPrefix(k, "$") {
				c.add(at(path, k), "field names must not start with $")
				continue
			}
			if k == "" || strings.ContainsAny(k, ".\"\\") {
				c.add(at(path, k), "field names must be non-empty and hold no '.', '\"' or '\\'")
				continue
			}
			c.noOperatorKeys(at(path, k), x[k])
		}
	case []any:
		for i, e := range x {
			c.noOperatorKeys(index(path, i), e)
		}
	}
}

// filter checks a query filter: field conditions and $and/$or at the top level.
func (c *configChecker) filter(path string, m map[string]any) {
	for _, k := range sortedKeys(m) {
		p := at(path, k)
		v := m[k]
		switch {
		case k == "$and" || k == "$or":
			arr, ok := c.array(p, v)
			if !ok {
				continue
			}
			if len(arr) == 0 {
				c.add(p, "must hold at least one filter")
			}
			for i, f := range arr {
				if fm, ok := c.object(index(p, i), f); ok {
					c.filter(index(p, i), fm)
				}
			}
		case slices.Contains(filterOperators, k):
			c.add(p, "%s must be applied to a field, as in {\"age\": {\"%s\": ...}}", k, k)
		case strings.HasPrefix(k, "$"):
			c.add(p, "unsupported operator; allowed: %s", strings.Join(filterOperators, " "))
		default:
			if !c.fieldName(p, k) {
				continue
			}
			if ops, ok := v.(map[string]any); ok && hasOperatorKey(ops) {
				c.operators(p, ops)
			}
		}
	}
}

// operators checks the operator object applied to one field, such as {"$gt": 1, "$lt": 9}.
func (c *configChecker) operators(path string, ops map[string]any) {
	for _, op := range sortedKeys(ops) {
		p := at(path, op)
		v := ops[op]
		switch {
		case !strings.HasPrefix(op, "$"):
			c.add(p, "operators and field names cannot be mixed in one condition")
		case slices.Contains(compareOperators, op):
		case op == "$in" || op == "$nin":
			if !c.loneTemplate(v) {
				c.array(p, v)
			}
		case op == "$exists":
			c.boolean(p, v)
		case op == "$not":
			m, ok := c.object(p, v)
			if !ok {
				continue
			}
			if len(m) == 0 || !hasOperatorKey(m) {
				c.add(p, "must hold an operator object, as in {\"$not\": {\"$gt\": 5}}")
				continue
			}
			c.operators(p, m)
		case op == "$and" || op == "$or":
			c.add(p, "%s is allowed only at the top level of a filter or inside another $and/$or", op)
		default:
			c.add(p, "unsupported operator; allowed: %s", strings.Join(filterOperators, " "))
		}
	}
}

func hasOperatorKey(m map[string]any) bool {
	for k := range m {
		if strings.HasPrefix(k, "$") {
			return true
		}
	}
	return false
}

// fieldName checks a (possibly dotted) document field name; it reports and returns false when it is bad.
func (c *configChecker) fieldName(path, name string) bool {
	if strings.HasPrefix(name, "$") {
		c.add(path, "field names must not start with $")
		return false
	}
	for _, seg := range strings.Split(name, ".") {
		switch {
		case seg == "":
			c.add(path, "field paths must not have empty segments")
			return false
		case strings.Trim(seg, "0123456789") == "":
			c.add(path, "array indexes are not supported in field paths")
			return false
		case strings.ContainsAny(seg, "\"\\"):
			c.add(path, "field paths must not hold '\"' or '\\'")
			return false
		}
	}
	return true
}

// update checks an update document: only $set, $unset, $inc and $push, each an object of field → value.
func (c *configChecker) update(path string, v any) {
	m, ok := c.object(path, v)
	if !ok {
		return
	}
	if len(m) == 0 {
		c.add(path, "must hold at least one of %s", strings.Join(updateOperators, " "))
		return
	}
	for _, op := range sortedKeys(m) {
		p := at(path, op)
		if !slices.Contains(updateOperators, op) {
			c.add(p, "unsupported update operator; allowed: %s", strings.Join(updateOperators, " "))
			continue
		}
		fields, ok := c.object(p, m[op])
		if !ok {
			continue
		}
		if len(fields) == 0 {
			c.add(p, "must name at least one field")
		}
		for _, f := range sortedKeys(fields) {
			fp := at(p, f)
			if !c.fieldName(fp, f) {
				continue
			}
			if op == "$inc" {
				if _, isNum := asNumber(fields[f]); !isNum && !c.loneTemplate(fields[f]) {
					c.add(fp, "must be a number, got %s", jsonKind(fields[f]))
				}
			} else {
				c.noOperatorKeys(fp, fields[f])
			}
		}
	}
}

// fieldMap checks a map of field name → one of two integers (sort, projection).
func (c *configChecker) fieldMap(path string, v any, a, b int64, msg string) {
	m, ok := c.object(path, v)
	if !ok {
		return
	}
	for _, f := range sortedKeys(m) {
		fp := at(path, f)
		if !c.fieldName(fp, f) {
			continue
		}
		if i, ok := asInt(m[f]); !ok || (i != a && i != b) {
			c.add(fp, "%s", msg)
		}
	}
}

func (c *collector) enum(path string, v any, allowed []string) (string, bool) {
	s, ok := c.str(path, v)
	if !ok {
		return "", false
	}
	if !slices.Contains(allowed, s) {
		c.add(path, "must be one of %s, got %q", strings.Join(allowed, ", "), truncate(s, 64))
		return "", false
	}
	return s, true
}

func (c *collector) boolean(path string, v any) (bool, bool) {
	b, ok := v.(bool)
	if !ok {
		c.add(path, "must be a boolean, got %s", jsonKind(v))
	}
	return b, ok
}

func (c *collector) intIn(path string, v any, lo, hi int64) (int64, bool) {
	i, ok := asInt(v)
	if !ok {
		if _, isNum := asNumber(v); isNum {
			c.add(path, "must be a whole number between %d and %d", lo, hi)
		} else {
			c.add(path, "must be an integer, got %s", jsonKind(v))
		}
		return 0, false
	}
	if i < lo || i > hi {
		c.add(path, "must be between %d and %d, got %d", lo, hi, i)
		return 0, false
	}
	return i, true
}

// asNumber returns v as a float64 when it is a Go or JSON number.
func asNumber(v any) (float64, bool) {
	switch x := v.(type) {
	case float64:
		return x, true
	case float32:
		return float64(x), true
	case int:
		return float64(x), true
	case int64:
		return float64(x), true
	case int32:
		return float64(x), true
	case uint:
		return float64(x), true
	case uint64:
		return float64(x), true
	case uint32:
		return float64(x), true
	case json.Number:
		f, err := x.Float64()
		return f, err == nil
	}
	return 0, false
}

// asInt returns v as an int64 when it is a whole number within int64's range.
func asInt(v any) (int64, bool) {
	switch x := v.(type) {
	case int:
		return int64(x), true
	case int64:
		return x, true
	case int32:
		return int64(x), true
	case json.Number:
		if i, err := x.Int64(); err == nil {
			return i, true
		}
	}
	f, ok := asNumber(v)
	if !ok || f != math.Trunc(f) || f < math.MinInt64 || f >= math.MaxInt64 {
		return 0, false
	}
	return int64(f), true
}
