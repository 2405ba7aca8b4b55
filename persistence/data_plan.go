package persistence

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/weftdev/weft/events"
)

// DataPlan is a DataRequest checked and parsed once, in the form both
// adapters compile: filters as a tree of conditions, documents normalised
// to canonical JSON. Adapters build it with PlanData and never look at the
// raw request again, so both refuse exactly the same requests.
type DataPlan struct {
	UserID     string
	Collection string
	Op         string
	Key        string // the idempotency key, "" when none
	// Docs are the documents to insert, each with its _id.
	Docs []Doc
	// Filter is nil when the request matches every document.
	Filter *Cond
	Update []UpdateOp
	Sort   []SortPath
	// Projection is applied to each returned document (ApplyProjection).
	Projection *Projection
	// Limit is what find returns at most, 1 for findOne, the count bound
	// for count (0: none).
	Limit            int
	MaxDocumentBytes int
	MaxResultBytes   int
}

// Doc is a normalised document: its _id, its value and its canonical JSON.
type Doc struct {
	ID    string
	Value map[string]any
	JSON  []byte
}

// Cond is one node of a filter. Op is "$and" or "$or" (Subs hold the
// parts), "$not" (Path, and Subs the conditions it negates, all on Path),
// or a field operator on Path: "$eq", "$ne", "$gt", "$gte", "$lt", "$lte",
// "$exists" (Value) or "$in", "$nin" (Values). Values are normalised:
// nil, bool, float64, string, []any, map[string]any.
type Cond struct {
	Op     string
	Path   []string
	Value  any
	Values []any
	Subs   []*Cond
}

// UpdateOp is one field change of an update, such as $inc of "n" by 2.
type UpdateOp struct {
	Op    string // $set, $unset, $inc or $push
	Path  []string
	Value any
}

// SortPath is a checked SortKey.
type SortPath struct {
	Path []string
	Desc bool
}

// Projection keeps (Include) or drops the listed paths. With Include, _id
// stays unless DropID.
type Projection struct {
	Include bool
	DropID  bool
	Paths   [][]string
}

var collectionPattern = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_]{0,63}$`)

// maxNesting bounds how deep documents and values nest: MongoDB refuses
// documents past 100 levels, and deep values make every walk slower.
const maxNesting = 64

// invalid builds the coded error of a request that cannot run as given.
func invalid(format string, args ...any) error {
	return events.Errorf(CodeDataInvalid, format, args...)
}

func tooLarge(format string, args ...any) error {
	return events.Errorf(CodeDataTooLarge, format, args...)
}

// PlanData checks req and parses it into a plan.
func PlanData(req DataRequest) (*DataPlan, error) {
	p := &DataPlan{
		UserID: req.UserID, Collection: req.Collection, Op: req.Operation, Key: req.IdempotencyKey,
		MaxDocumentBytes: req.MaxDocumentBytes, MaxResultBytes: req.MaxResultBytes,
	}
	if p.MaxDocumentBytes <= 0 {
		p.MaxDocumentBytes = DefaultMaxDocumentBytes
	}
	if p.MaxResultBytes <= 0 {
		p.MaxResultBytes = DefaultMaxResultBytes
	}
	if req.UserID == "" {
		return nil, invalid("a data request needs a user")
	}
	if !collectionPattern.MatchString(req.Collection) {
		return nil, invalid("collection must start with a letter and hold at most 64 letters, digits and underscores, got %q", clip(req.Collection))
	}
	uses := map[string]string{}
	switch req.Operation {
	case OpInsertOne:
		uses["document"] = ""
		if req.Document == nil {
			return nil, invalid("insertOne needs a document")
		}
		d, err := p.doc(req.Document, 0)
		if err != nil {
			return nil, err
		}
		p.Docs = []Doc{d}
	case OpInsertMany:
		uses["documents"] = ""
		if len(req.Documents) == 0 {
			return nil, invalid("insertMany needs at least one document")
		}
		if len(req.Documents) > MaxInsertDocuments {
			return nil, invalid("insertMany takes at most %d documents, got %d", MaxInsertDocuments, len(req.Documents))
		}
		total := 0
		seen := make(map[string]bool, len(req.Documents))
		for i, v := range req.Documents {
			d, err := p.doc(v, i)
			if err != nil {
				return nil, fmt.Errorf("documents[%d]: %w", i, err)
			}
			if seen[d.ID] {
				return nil, invalid("documents[%d]: _id %q appears twice", i, clip(d.ID))
			}
			seen[d.ID] = true
			total += len(d.JSON)
			if total > p.MaxResultBytes {
				return nil, tooLarge("the documents add up to more than %d bytes", p.MaxResultBytes)
			}
			p.Docs = append(p.Docs, d)
		}
	case OpFind, OpFindOne, OpCount, OpUpdateOne, OpUpdateMany, OpDeleteOne, OpDeleteMany:
	default:
		return nil, invalid("unknown operation %q", clip(req.Operation))
	}
	if req.Operation != OpInsertOne && req.Document != nil {
		return nil, invalid("document is used only by insertOne")
	}
	if req.Operation != OpInsertMany && req.Documents != nil {
		return nil, invalid("documents is used only by insertMany")
	}
	if req.Filter != nil {
		if strings.HasPrefix(req.Operation, "insert") {
			return nil, invalid("filter is not used by %s", req.Operation)
		}
		f, err := parseFilter(req.Filter, 1)
		if err != nil {
			return nil, err
		}
		conds, vals := filterSize(f)
		if conds > MaxFilterConditions {
			return nil, invalid("the filter holds more than %d conditions", MaxFilterConditions)
		}
		if vals > MaxFilterValues {
			return nil, invalid("the filter's $in and $nin lists hold more than %d values in all", MaxFilterValues)
		}
		if len(f.Subs) > 0 {
			p.Filter = f
		}
	}
	isUpdate := req.Operation == OpUpdateOne || req.Operation == OpUpdateMany
	switch {
	case isUpdate:
		u, err := parseUpdate(req.Update)
		if err != nil {
			return nil, err
		}
		p.Update = u
	case req.Update != nil:
		return nil, invalid("update is used only by updateOne and updateMany")
	}
	isRead := req.Operation == OpFind || req.Operation == OpFindOne
	if len(req.Sort) > 0 {
		if !isRead {
			return nil, invalid("sort is used only by find and findOne")
		}
		if len(req.Sort) > 8 {
			return nil, invalid("sort takes at most 8 fields")
		}
		for _, k := range req.Sort {
			path, err := ParsePath(k.Path)
			if err != nil {
				return nil, fmt.Errorf("sort: %w", err)
			}
			p.Sort = append(p.Sort, SortPath{Path: path, Desc: k.Desc})
		}
	}
	if req.Projection != nil {
		if !isRead {
			return nil, invalid("projection is used only by find and findOne")
		}
		pr, err := parseProjection(req.Projection)
		if err != nil {
			return nil, err
		}
		p.Projection = pr
	}
	if req.Limit < 0 || req.Limit > MaxDataLimit {
		return nil, invalid("limit must be between 1 and %d, got %d", MaxDataLimit, req.Limit)
	}
	switch req.Operation {
	case OpFind:
		p.Limit = req.Limit
		if p.Limit == 0 {
			p.Limit = DefaultFindLimit
		}
	case OpFindOne:
		p.Limit = 1
	case OpCount:
		p.Limit = req.Limit
	default:
		if req.Limit != 0 {
			return nil, invalid("limit is used only by find and count")
		}
	}
	return p, nil
}

// doc normalises one document to insert, giving it an _id when it has
// none: derived from the idempotency key and the index, so that a retried
// insert names the same documents.
func (p *DataPlan) doc(v any, i int) (Doc, error) {
	n, err := Normalize(v)
	if err != nil {
		return Doc{}, err
	}
	m, ok := n.(map[string]any)
	if !ok {
		return Doc{}, invalid("a document must be an object, got %s", kind(n))
	}
	if err := checkValue(m, 0, true); err != nil {
		return Doc{}, err
	}
	if id, has := m["_id"]; has {
		s, ok := id.(string)
		if !ok || s == "" || len(s) > MaxIDBytes {
			return Doc{}, invalid("_id must be a non-empty string of at most %d bytes", MaxIDBytes)
		}
	} else {
		m["_id"] = p.newID(i)
	}
	raw, err := Canonical(m)
	if err != nil {
		return Doc{}, err
	}
	if len(raw) > p.MaxDocumentBytes {
		return Doc{}, tooLarge("a document is %d bytes, more than the %d allowed", len(raw), p.MaxDocumentBytes)
	}
	return Doc{ID: m["_id"].(string), Value: m, JSON: raw}, nil
}

func (p *DataPlan) newID(i int) string {
	if p.Key != "" {
		sum := sha256.Sum256(fmt.Appendf(nil, "%s\x00%s\x00%s\x00%d", p.UserID, p.Collection, p.Key, i))
		return hex.EncodeToString(sum[:12])
	}
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Normalize turns a JSON-like Go value (ints, typed maps, json.Number...)
// into its plain JSON form: nil, bool, float64, string, []any and
// map[string]any, the only types the rest of this file handles.
func Normalize(v any) (any, error) {
	raw, err := json.Marshal(v)
	if err != nil {
		return nil, invalid("a value cannot be written as JSON: %v", err)
	}
	var out any
	if err := json.Unmarshal(raw, &out); err != nil {
		return nil, invalid("a value cannot be read as JSON: %v", err)
	}
	return out, nil
}

// Canonical is the JSON a store keeps and compares: compact, keys sorted
// (encoding/json sorts map keys) and without HTML escaping.
func Canonical(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, invalid("a value cannot be written as JSON: %v", err)
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}

// checkValue checks the field names and shape of a normalised value: names
// usable in paths, no arrays directly inside arrays, bounded nesting.
func checkValue(v any, depth int, inDoc bool) error {
	if depth > maxNesting {
		return invalid("values nest more than %d levels deep", maxNesting)
	}
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			if err := checkName(k); err != nil {
				return err
			}
			if err := checkValue(e, depth+1, inDoc); err != nil {
				return err
			}
		}
	case []any:
		for _, e := range x {
			if _, nested := e.([]any); nested {
				return invalid("arrays directly inside arrays are not supported")
			}
			if err := checkValue(e, depth+1, inDoc); err != nil {
				return err
			}
		}
	}
	return nil
}

// checkName checks a field name of a stored value. The characters refused
// would be ambiguous in a dotted path or in the adapters' JSON paths.
func checkName(k string) error {
	switch {
	case k == "":
		return invalid("field names must not be empty")
	case strings.HasPrefix(k, "$"):
		return invalid("field name %q must not start with $", clip(k))
	case strings.ContainsAny(k, ".\"\\"):
		return invalid("field name %q must not hold '.', '\"' or '\\'", clip(k))
	case strings.ContainsFunc(k, func(r rune) bool { return r < 0x20 }):
		return invalid("field name %q must not hold control characters", clip(k))
	}
	return nil
}

// ParsePath splits and checks a dotted path. Digit-only segments are
// refused: MongoDB reads them as array indexes, which the data space does
// not offer.
func ParsePath(s string) ([]string, error) {
	segs := strings.Split(s, ".")
	if len(segs) > MaxPathDepth {
		return nil, invalid("path %q has more than %d segments", clip(s), MaxPathDepth)
	}
	for _, seg := range segs {
		if err := checkName(seg); err != nil {
			return nil, invalid("path %q: %s", clip(s), strings.TrimPrefix(err.Error(), CodeDataInvalid+": "))
		}
		if strings.Trim(seg, "0123456789") == "" {
			return nil, invalid("path %q: array indexes are not supported", clip(s))
		}
	}
	return segs, nil
}

var comparisons = []string{"$gt", "$gte", "$lt", "$lte"}

// parseFilter parses a filter object into an $and of its parts.
func parseFilter(m map[string]any, depth int) (*Cond, error) {
	if depth > MaxPathDepth {
		return nil, invalid("the filter nests more than %d levels deep", MaxPathDepth)
	}
	and := &Cond{Op: "$and"}
	for _, k := range sortedKeys(m) {
		v := m[k]
		switch {
		case k == "$and" || k == "$or":
			arr, ok := v.([]any)
			if !ok || len(arr) == 0 {
				return nil, invalid("%s must be a non-empty list of filters", k)
			}
			if len(arr) > MaxDataLimit {
				return nil, invalid("%s holds more than %d filters", k, MaxDataLimit)
			}
			c := &Cond{Op: k}
			for i, e := range arr {
				fm, ok := e.(map[string]any)
				if !ok {
					return nil, invalid("%s[%d] must be a filter object", k, i)
				}
				sub, err := parseFilter(fm, depth+1)
				if err != nil {
					return nil, err
				}
				c.Subs = append(c.Subs, sub)
			}
			and.Subs = append(and.Subs, c)
		case strings.HasPrefix(k, "$"):
			return nil, invalid("unsupported filter operator %q at the top of a filter", clip(k))
		default:
			path, err := ParsePath(k)
			if err != nil {
				return nil, err
			}
			conds, err := parseField(path, v)
			if err != nil {
				return nil, err
			}
			and.Subs = append(and.Subs, conds...)
		}
	}
	return and, nil
}

// filterSize counts the conditions on fields of a filter and the values
// of its lists.
func filterSize(c *Cond) (conds, vals int) {
	switch c.Op {
	case "$and", "$or", "$not":
		for _, s := range c.Subs {
			n, v := filterSize(s)
			conds, vals = conds+n, vals+v
		}
		return conds, vals
	}
	return 1, len(c.Values)
}

// parseField parses the condition on one field: an operator object or a
// value for implicit equality.
func parseField(path []string, v any) ([]*Cond, error) {
	ops, ok := v.(map[string]any)
	if !ok || !hasOperator(ops) {
		val, err := filterValue(v)
		if err != nil {
			return nil, err
		}
		return []*Cond{{Op: "$eq", Path: path, Value: val}}, nil
	}
	var out []*Cond
	for _, op := range sortedKeys(ops) {
		arg := ops[op]
		where := strings.Join(path, ".") + "." + op
		switch {
		case op == "$eq" || op == "$ne":
			val, err := filterValue(arg)
			if err != nil {
				return nil, err
			}
			out = append(out, &Cond{Op: op, Path: path, Value: val})
		case slices.Contains(comparisons, op):
			val, err := filterValue(arg)
			if err != nil {
				return nil, err
			}
			switch val.(type) {
			case float64, string, bool:
			default:
				return nil, invalid("%s compares with a number, a string or a boolean, got %s", where, kind(val))
			}
			out = append(out, &Cond{Op: op, Path: path, Value: val})
		case op == "$in" || op == "$nin":
			arr, ok := arg.([]any)
			if !ok {
				return nil, invalid("%s must be a list", where)
			}
			if len(arr) > MaxDataLimit {
				return nil, invalid("%s holds more than %d values", where, MaxDataLimit)
			}
			c := &Cond{Op: op, Path: path, Values: make([]any, 0, len(arr))}
			for _, e := range arr {
				val, err := filterValue(e)
				if err != nil {
					return nil, err
				}
				c.Values = append(c.Values, val)
			}
			out = append(out, c)
		case op == "$exists":
			b, ok := arg.(bool)
			if !ok {
				return nil, invalid("%s must be true or false", where)
			}
			out = append(out, &Cond{Op: op, Path: path, Value: b})
		case op == "$not":
			m, ok := arg.(map[string]any)
			if !ok || len(m) == 0 || !hasOperator(m) {
				return nil, invalid("%s must hold an operator object, as in {\"$not\": {\"$gt\": 5}}", where)
			}
			subs, err := parseField(path, m)
			if err != nil {
				return nil, err
			}
			out = append(out, &Cond{Op: "$not", Path: path, Subs: subs})
		case strings.HasPrefix(op, "$"):
			return nil, invalid("unsupported filter operator %s", clip(where))
		default:
			return nil, invalid("%s: operators and field names cannot be mixed in one condition", clip(where))
		}
	}
	return out, nil
}

func hasOperator(m map[string]any) bool {
	for k := range m {
		if strings.HasPrefix(k, "$") {
			return true
		}
	}
	return false
}

// filterValue normalises a value a filter compares with; it obeys the
// rules of stored values, so that it can ever equal one.
func filterValue(v any) (any, error) {
	n, err := Normalize(v)
	if err != nil {
		return nil, err
	}
	if _, isArr := n.([]any); isArr {
		if err := checkValue(n, 1, false); err != nil {
			return nil, err
		}
	} else if err := checkValue(n, 0, false); err != nil {
		return nil, err
	}
	return n, nil
}

var updateOperators = []string{"$inc", "$push", "$set", "$unset"}

// parseUpdate parses an update object into field changes, refusing paths
// that overlap (MongoDB refuses {"$set": {"a": 1}, "$inc": {"a.b": 1}}) and
// changes of _id.
func parseUpdate(m map[string]any) ([]UpdateOp, error) {
	if len(m) == 0 {
		return nil, invalid("update must hold at least one of %s", strings.Join(updateOperators, " "))
	}
	var out []UpdateOp
	for _, op := range sortedKeys(m) {
		if !slices.Contains(updateOperators, op) {
			return nil, invalid("unsupported update operator %q; allowed: %s", clip(op), strings.Join(updateOperators, " "))
		}
		fields, ok := m[op].(map[string]any)
		if !ok || len(fields) == 0 {
			return nil, invalid("%s must be an object naming at least one field", op)
		}
		for _, f := range sortedKeys(fields) {
			path, err := ParsePath(f)
			if err != nil {
				return nil, err
			}
			if path[0] == "_id" {
				return nil, invalid("%s.%s: _id cannot be changed", op, clip(f))
			}
			u := UpdateOp{Op: op, Path: path}
			if op != "$unset" {
				v, err := Normalize(fields[f])
				if err != nil {
					return nil, err
				}
				if err := checkValue(v, len(path), true); err != nil {
					return nil, err
				}
				switch op {
				case "$inc":
					if _, ok := v.(float64); !ok {
						return nil, invalid("$inc.%s must be a number, got %s", clip(f), kind(v))
					}
				case "$push":
					if _, ok := v.([]any); ok {
						return nil, invalid("$push.%s: pushing a list would nest arrays, which is not supported", clip(f))
					}
				}
				u.Value = v
			}
			out = append(out, u)
		}
	}
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if prefix(out[i].Path, out[j].Path) || prefix(out[j].Path, out[i].Path) {
				return nil, invalid("update paths %q and %q overlap", strings.Join(out[i].Path, "."), strings.Join(out[j].Path, "."))
			}
		}
	}
	return out, nil
}

// prefix reports whether a is b or a leading part of it.
func prefix(a, b []string) bool {
	return len(a) <= len(b) && slices.Equal(a, b[:len(a)])
}

func parseProjection(m map[string]any) (*Projection, error) {
	p := &Projection{}
	kindSet := false
	for _, k := range sortedKeys(m) {
		path, err := ParsePath(k)
		if err != nil {
			return nil, fmt.Errorf("projection: %w", err)
		}
		var inc bool
		switch x := m[k].(type) {
		case bool:
			inc = x
		default:
			n, ok := asFloat(x)
			if !ok || (n != 0 && n != 1) {
				return nil, invalid("projection.%s must be 1 (include) or 0 (exclude)", clip(k))
			}
			inc = n == 1
		}
		if k == "_id" {
			p.DropID = !inc
			continue
		}
		if kindSet && inc != p.Include {
			return nil, invalid("a projection either includes or excludes fields; only _id may differ")
		}
		p.Include, kindSet = inc, true
		for _, q := range p.Paths {
			if prefix(q, path) || prefix(path, q) {
				return nil, invalid("projection paths %q and %q overlap", strings.Join(q, "."), k)
			}
		}
		p.Paths = append(p.Paths, path)
	}
	if !kindSet {
		// Only _id was named: {"_id": 0} drops it, {"_id": 1} keeps only it.
		p.Include = !p.DropID
	}
	return p, nil
}

func asFloat(v any) (float64, bool) {
	n, err := Normalize(v)
	if err != nil {
		return 0, false
	}
	f, ok := n.(float64)
	return f, ok
}

func kind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case bool:
		return "a boolean"
	case float64:
		return "a number"
	case string:
		return "a string"
	case []any:
		return "a list"
	case map[string]any:
		return "an object"
	}
	return fmt.Sprintf("%T", v)
}

func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
