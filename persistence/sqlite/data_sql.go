package sqlite

import (
	"strconv"
	"strings"

	"github.com/weftdev/weft/persistence"
)

// The filter compiler: a persistence.Cond becomes a WHERE expression over
// the row alias d of data_documents, using SQLite's JSON functions. Every
// value and every JSON path is a bound parameter; the SQL text is built only
// from constants of this file, so no user string is ever spliced into it.
//
// Semantics (the ones documented in persistence/data.go, which MongoDB and
// FerretDB apply natively):
//
//   - The candidates of a path a.b.c are found by a chain of json_each: the
//     value at a, then for each next segment, the field of that value if it
//     is an object, or the field of each object in it if it is an array.
//   - The items a condition tests are each candidate and, when a candidate
//     is an array, each of its elements. json_insert(v, '$[#]', v) appends
//     the array to its own elements, so one json_each yields them all.
//   - Types bracket comparisons: e.type names the item's JSON type, e.atom
//     its SQL value (booleans are 0 and 1).
//   - $ne, $nin, $not and {"$exists": false} are NOT of their positive form,
//     so they match missing fields as MongoDB does.

// sqlb accumulates SQL text and its arguments.
type sqlb struct {
	b    strings.Builder
	args []any
	// n numbers the json_each aliases of one statement.
	n int
	// bound numbers the strings and numbers already bound, so a value
	// repeated in one statement (the JSON path of a segment is bound several
	// times per condition) takes one of SQLite's host parameters, not many.
	bound map[any]int
}

func (q *sqlb) sql(s string) *sqlb { q.b.WriteString(s); return q }

// arg binds v. A string or number bound before is referred to by its
// number (?NNN); a new one is a plain ?, which SQLite numbers one past the
// largest number so far, that is len(q.args), since every argument is
// appended in the order its ? appears and ?NNN only ever names an earlier
// one.
func (q *sqlb) arg(v any) *sqlb {
	switch v.(type) {
	case string, float64, int, int64:
		if i, ok := q.bound[v]; ok {
			q.b.WriteString("?" + strconv.Itoa(i))
			return q
		}
		if q.bound == nil {
			q.bound = map[any]int{}
		}
		q.bound[v] = len(q.args) + 1
	}
	q.b.WriteByte('?')
	q.args = append(q.args, v)
	return q
}

// jsonPath is the SQLite JSON path of segments, each quoted. Segments hold
// no '"' or '\' (persistence.ParsePath refuses them), so quoting is exact.
func jsonPath(segs ...string) string {
	var b strings.Builder
	b.WriteByte('$')
	for _, s := range segs {
		b.WriteString(`."`)
		b.WriteString(s)
		b.WriteByte('"')
	}
	return b.String()
}

// alias returns a fresh json_each alias.
func (q *sqlb) alias() string {
	q.n++
	return "j" + strconv.Itoa(q.n)
}

// cond writes the expression for c.
func (q *sqlb) cond(c *persistence.Cond) {
	switch c.Op {
	case "$and", "$or":
		if len(c.Subs) == 0 {
			q.sql("1")
			return
		}
		sep := " AND "
		if c.Op == "$or" {
			sep = " OR "
		}
		q.sql("(")
		q.join(c.Subs, sep)
		q.sql(")")
	case "$not":
		q.sql("NOT ")
		q.cond(&persistence.Cond{Op: "$and", Subs: c.Subs})
	case "$ne":
		q.sql("NOT ")
		q.eqAny(c.Path, []any{c.Value})
	case "$eq":
		q.eqAny(c.Path, []any{c.Value})
	case "$in":
		q.eqAny(c.Path, c.Values)
	case "$nin":
		q.sql("NOT ")
		q.eqAny(c.Path, c.Values)
	case "$exists":
		if c.Value == false {
			q.sql("NOT ")
		}
		q.exists(c.Path, nil)
	case "$gt", "$gte", "$lt", "$lte":
		op := map[string]string{"$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}[c.Op]
		q.exists(c.Path, func(it string) {
			switch v := c.Value.(type) {
			case float64:
				q.sql(it + ".type IN ('integer', 'real') AND " + it + ".atom " + op + " ").arg(v)
			case string:
				q.sql(it + ".type = 'text' AND " + it + ".atom " + op + " ").arg(v)
			case bool:
				b := 0
				if v {
					b = 1
				}
				q.sql(it + ".type IN ('true', 'false') AND " + it + ".atom " + op + " ").arg(b)
			default:
				q.sql("0") // refused by PlanData; never matches
			}
		})
	default:
		q.sql("0")
	}
}

// join writes subs separated by sep as a balanced tree: SQLite caps the
// depth of an expression at 1000, which a flat chain of as many terms (a
// left-deep tree) would pass.
func (q *sqlb) join(subs []*persistence.Cond, sep string) {
	if len(subs) == 1 {
		q.cond(subs[0])
		return
	}
	mid := len(subs) / 2
	q.sql("(")
	q.join(subs[:mid], sep)
	q.sql(sep)
	q.join(subs[mid:], sep)
	q.sql(")")
}

// eqAny writes "some item at path equals one of vals". A null among vals
// also matches a path with no candidate at all. The values are grouped by
// type, each group one IN list, so the expression stays shallow however
// many values there are.
func (q *sqlb) eqAny(path []string, vals []any) {
	if len(vals) == 0 {
		q.sql("0")
		return
	}
	var (
		hasNull, hasTrue, hasFalse bool
		nums, strs                 []any
		objs, arrs                 []string
	)
	for _, v := range vals {
		switch x := v.(type) {
		case nil:
			hasNull = true
		case bool:
			hasTrue, hasFalse = hasTrue || x, hasFalse || !x
		case float64:
			nums = append(nums, x)
		case string:
			strs = append(strs, x)
		default:
			raw, err := persistence.Canonical(x)
			if err != nil {
				continue // never matches
			}
			if _, ok := x.([]any); ok {
				arrs = append(arrs, string(raw))
			} else {
				objs = append(objs, string(raw))
			}
		}
	}
	q.sql("(")
	q.exists(path, func(it string) {
		or := ""
		term := func(s string) {
			q.sql(or + s)
			or = " OR "
		}
		q.sql("(")
		if hasNull {
			term(it + ".type = 'null'")
		}
		if hasTrue {
			term(it + ".type = 'true'")
		}
		if hasFalse {
			term(it + ".type = 'false'")
		}
		if len(nums) > 0 {
			term("(" + it + ".type IN ('integer', 'real') AND " + it + ".atom IN (")
			q.list(nums, "?")
			q.sql("))")
		}
		if len(strs) > 0 {
			term("(" + it + ".type = 'text' AND " + it + ".atom IN (")
			q.list(strs, "?")
			q.sql("))")
		}
		for _, g := range []struct {
			t    string
			vals []string
		}{{"object", objs}, {"array", arrs}} {
			if len(g.vals) == 0 {
				continue
			}
			vals := make([]any, len(g.vals))
			for i, v := range g.vals {
				vals[i] = v
			}
			term("(" + it + ".type = '" + g.t + "' AND json(" + it + ".value) IN (")
			q.list(vals, "json(?)")
			q.sql("))")
		}
		if or == "" {
			q.sql("0")
		}
		q.sql(")")
	})
	if hasNull {
		q.sql(" OR NOT ")
		q.exists(path, nil)
	}
	q.sql(")")
}

// list writes vals separated by commas, each as form with its ? bound to
// the value.
func (q *sqlb) list(vals []any, form string) {
	pre, post, _ := strings.Cut(form, "?")
	for i, v := range vals {
		if i > 0 {
			q.sql(", ")
		}
		q.sql(pre).arg(v).sql(post)
	}
}

// exists writes EXISTS over the candidates of path: with item nil, "the
// path has a candidate"; otherwise "some item satisfies item(alias)".
func (q *sqlb) exists(path []string, item func(it string)) {
	// tables are the FROM items, where the conditions on them; a path of
	// one segment tested for presence needs no table at all.
	var tables, where []func()
	// w is the SQL expression of the current candidate (JSON text).
	w := func() { q.sql("(d.doc -> ").arg(jsonPath(path[0])).sql(")") }
	for _, seg := range path[1:] {
		prev := w
		a := q.alias()
		// The objects of the previous candidate: itself, or those in it.
		tables = append(tables, func() {
			q.sql("json_each(CASE WHEN json_type(")
			prev()
			q.sql(") = 'array' THEN ")
			prev()
			q.sql(" ELSE json_array(json(")
			prev()
			q.sql(")) END) " + a)
		})
		where = append(where, func() { q.sql(a + ".type = 'object'") })
		w = func() { q.sql("(" + a + ".value -> ").arg(jsonPath(seg)).sql(")") }
	}
	if item != nil {
		it := q.alias()
		last := w
		tables = append(tables, func() {
			q.sql("json_each(CASE WHEN json_type(")
			last()
			q.sql(") = 'array' THEN json_insert(")
			last()
			q.sql(", '$[#]', json(")
			last()
			q.sql(")) ELSE json_array(json(")
			last()
			q.sql(")) END) " + it)
		})
		where = append(where, func() { item(it) })
	}
	q.sql("EXISTS (SELECT 1")
	for i, f := range tables {
		if i == 0 {
			q.sql(" FROM ")
		} else {
			q.sql(", ")
		}
		f()
	}
	q.sql(" WHERE ")
	w()
	q.sql(" IS NOT NULL")
	for _, f := range where {
		q.sql(" AND ")
		f()
	}
	q.sql(")")
}

// rank orders JSON types as MongoDB does: missing and null, numbers,
// strings, objects, arrays, booleans.
func rank(t string) string {
	return "(CASE " + t + " WHEN 'null' THEN 1 WHEN 'integer' THEN 2 WHEN 'real' THEN 2 WHEN 'text' THEN 3" +
		" WHEN 'object' THEN 4 WHEN 'array' THEN 5 WHEN 'true' THEN 6 WHEN 'false' THEN 6 ELSE 1 END)"
}

// orderBy writes the ORDER BY of a sort: per key, the type rank then the
// value; an array stands for its least (ascending) or greatest
// (descending) element, an empty array ranks before null. Ties go by id.
func (q *sqlb) orderBy(keys []persistence.SortPath) {
	q.sql(" ORDER BY ")
	for _, k := range keys {
		p := jsonPath(k.Path...)
		agg, dir := "MIN", " ASC, "
		if k.Desc {
			agg, dir = "MAX", " DESC, "
		}
		elemRank := func() {
			q.sql("COALESCE((SELECT " + agg + "(" + rank("e.type") + ") FROM json_each(d.doc, ").arg(p).sql(") e), 0)")
		}
		keyRank := func() {
			q.sql("(CASE WHEN json_type(d.doc, ").arg(p).sql(") = 'array' THEN ")
			elemRank()
			q.sql(" ELSE " + rank("json_type(d.doc, ?)") + " END)")
			q.args = append(q.args, p)
		}
		keyRank()
		q.sql(dir)
		q.sql("(CASE WHEN json_type(d.doc, ").arg(p).sql(") = 'array' THEN (SELECT " + agg +
			"(CASE WHEN e.type = 'object' THEN e.value ELSE e.atom END) FROM json_each(d.doc, ").arg(p).
			sql(") e WHERE " + rank("e.type") + " = ")
		elemRank()
		q.sql(") ELSE json_extract(d.doc, ").arg(p).sql(") END)")
		q.sql(dir)
	}
	q.sql("d.id ASC")
}
