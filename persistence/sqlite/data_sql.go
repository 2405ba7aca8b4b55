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
}

func (q *sqlb) sql(s string) *sqlb { q.b.WriteString(s); return q }

func (q *sqlb) arg(v any) *sqlb {
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
		for i, s := range c.Subs {
			if i > 0 {
				q.sql(sep)
			}
			q.cond(s)
		}
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

// eqAny writes "some item at path equals one of vals". A null among vals
// also matches a path with no candidate at all.
func (q *sqlb) eqAny(path []string, vals []any) {
	hasNull := false
	for _, v := range vals {
		if v == nil {
			hasNull = true
		}
	}
	if len(vals) == 0 {
		q.sql("0")
		return
	}
	q.sql("(")
	q.exists(path, func(it string) {
		q.sql("(")
		for i, v := range vals {
			if i > 0 {
				q.sql(" OR ")
			}
			q.itemEq(it, v)
		}
		q.sql(")")
	})
	if hasNull {
		q.sql(" OR NOT ")
		q.exists(path, nil)
	}
	q.sql(")")
}

// itemEq writes "item it equals v", types bracketed.
func (q *sqlb) itemEq(it string, v any) {
	switch x := v.(type) {
	case nil:
		q.sql(it + ".type = 'null'")
	case bool:
		if x {
			q.sql(it + ".type = 'true'")
		} else {
			q.sql(it + ".type = 'false'")
		}
	case float64:
		q.sql("(" + it + ".type IN ('integer', 'real') AND " + it + ".atom = ").arg(x).sql(")")
	case string:
		q.sql("(" + it + ".type = 'text' AND " + it + ".atom = ").arg(x).sql(")")
	default:
		raw, err := persistence.Canonical(x)
		if err != nil {
			q.sql("0")
			return
		}
		t := "object"
		if _, ok := x.([]any); ok {
			t = "array"
		}
		q.sql("(" + it + ".type = '" + t + "' AND json(" + it + ".value) = json(").arg(string(raw)).sql("))")
	}
}

// exists writes EXISTS over the candidates of path: with item nil, "the
// path has a candidate"; otherwise "some item satisfies item(alias)".
func (q *sqlb) exists(path []string, item func(it string)) {
	q.sql("EXISTS (SELECT 1 FROM ")
	// w is the SQL expression of the current candidate (JSON text).
	var where []func()
	w := func() { q.sql("(d.doc -> ").arg(jsonPath(path[0])).sql(")") }
	first := true
	for _, seg := range path[1:] {
		prev := w
		a := q.alias()
		if !first {
			q.sql(", ")
		}
		first = false
		// The objects of the previous candidate: itself, or those in it.
		q.sql("json_each(CASE WHEN json_type(")
		prev()
		q.sql(") = 'array' THEN ")
		prev()
		q.sql(" ELSE json_array(json(")
		prev()
		q.sql(")) END) " + a)
		where = append(where, func() { q.sql(a + ".type = 'object'") })
		w = func() { q.sql("(" + a + ".value -> ").arg(jsonPath(seg)).sql(")") }
	}
	if first {
		q.sql("(SELECT 1)")
	}
	if item != nil {
		it := q.alias()
		q.sql(", json_each(CASE WHEN json_type(")
		w()
		q.sql(") = 'array' THEN json_insert(")
		w()
		q.sql(", '$[#]', json(")
		w()
		q.sql(")) ELSE json_array(json(")
		w()
		q.sql(")) END) " + it)
		where = append(where, func() { item(it) })
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
