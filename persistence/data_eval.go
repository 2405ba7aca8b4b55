package persistence

import (
	"bytes"
	"encoding/json"
	"strings"
)

// ApplyUpdate applies the plan's update to the stored document raw and
// returns the new canonical JSON and whether it differs. Both adapters
// update through it, so a $inc on a string or a $set through a number
// fails alike everywhere.
func (p *DataPlan) ApplyUpdate(raw []byte) (out []byte, changed bool, err error) {
	var doc map[string]any
	if err := json.Unmarshal(raw, &doc); err != nil {
		return nil, false, invalid("a stored document cannot be read: %v", err)
	}
	for _, u := range p.Update {
		if err := applyOne(doc, u); err != nil {
			return nil, false, err
		}
	}
	out, err = Canonical(doc)
	if err != nil {
		return nil, false, err
	}
	if len(out) > p.MaxDocumentBytes {
		return nil, false, tooLarge("the updated document is %d bytes, more than the %d allowed", len(out), p.MaxDocumentBytes)
	}
	return out, !bytes.Equal(out, raw), nil
}

func applyOne(doc map[string]any, u UpdateOp) error {
	where := u.Op + "." + strings.Join(u.Path, ".")
	parent := doc
	for i, seg := range u.Path[:len(u.Path)-1] {
		next, has := parent[seg]
		if !has {
			if u.Op == "$unset" {
				return nil
			}
			m := map[string]any{}
			parent[seg] = m
			parent = m
			continue
		}
		m, ok := next.(map[string]any)
		if !ok {
			if u.Op == "$unset" {
				return nil
			}
			return invalid("%s: %s is %s, not an object", where, strings.Join(u.Path[:i+1], "."), kind(next))
		}
		parent = m
	}
	last := u.Path[len(u.Path)-1]
	cur, has := parent[last]
	switch u.Op {
	case "$set":
		parent[last] = u.Value
	case "$unset":
		delete(parent, last)
	case "$inc":
		if !has {
			parent[last] = u.Value
			return nil
		}
		n, ok := cur.(float64)
		if !ok {
			return invalid("%s: the field is %s, not a number", where, kind(cur))
		}
		parent[last] = n + u.Value.(float64)
	case "$push":
		if !has {
			parent[last] = []any{u.Value}
			return nil
		}
		arr, ok := cur.([]any)
		if !ok {
			return invalid("%s: the field is %s, not a list", where, kind(cur))
		}
		parent[last] = append(arr, u.Value)
	}
	return nil
}

// Results gathers the documents a read returns, decoding each, applying
// the projection and holding the total size under the plan's cap.
type Results struct {
	plan  *DataPlan
	bytes int
	Docs  []map[string]any
}

// NewResults starts an empty result set for p.
func (p *DataPlan) NewResults() *Results { return &Results{plan: p} }

// Add decodes one stored document into the results.
func (r *Results) Add(raw []byte) error {
	r.bytes += len(raw)
	if r.bytes > r.plan.MaxResultBytes {
		return tooLarge("the result passes %d bytes; narrow the filter, lower the limit or project fewer fields", r.plan.MaxResultBytes)
	}
	var doc map[string]any
	if err := json.Unmarshal(raw, &doc); err != nil {
		return invalid("a stored document cannot be read: %v", err)
	}
	if r.plan.Projection != nil {
		doc = r.plan.Projection.Apply(doc)
	}
	r.Docs = append(r.Docs, doc)
	return nil
}

// Result is the read's answer for the plan's operation.
func (r *Results) Result() *DataResult {
	if r.plan.Op == OpFindOne {
		if len(r.Docs) == 0 {
			return &DataResult{}
		}
		return &DataResult{Document: r.Docs[0]}
	}
	docs := r.Docs
	if docs == nil {
		docs = []map[string]any{}
	}
	return &DataResult{Documents: docs}
}

// Apply returns the projected copy of doc. As in MongoDB, a path that meets
// a list applies to each object in it; an inclusion keeps only objects of
// such a list.
func (p *Projection) Apply(doc map[string]any) map[string]any {
	if !p.Include {
		for _, path := range p.Paths {
			exclude(doc, path)
		}
		if p.DropID {
			delete(doc, "_id")
		}
		return doc
	}
	out := map[string]any{}
	for _, path := range p.Paths {
		include(doc, out, path)
	}
	if id, ok := doc["_id"]; ok && !p.DropID {
		out["_id"] = id
	}
	return out
}

func exclude(v any, path []string) {
	switch x := v.(type) {
	case map[string]any:
		if len(path) == 1 {
			delete(x, path[0])
			return
		}
		if next, ok := x[path[0]]; ok {
			exclude(next, path[1:])
		}
	case []any:
		for _, e := range x {
			if m, ok := e.(map[string]any); ok {
				exclude(m, path)
			}
		}
	}
}

// include copies path from src into dst, merging with what earlier paths
// copied.
func include(src, dst map[string]any, path []string) {
	v, ok := src[path[0]]
	if !ok {
		return
	}
	if len(path) == 1 {
		dst[path[0]] = v
		return
	}
	switch x := v.(type) {
	case map[string]any:
		sub, _ := dst[path[0]].(map[string]any)
		if sub == nil {
			sub = map[string]any{}
		}
		include(x, sub, path[1:])
		dst[path[0]] = sub
	case []any:
		prev, _ := dst[path[0]].([]any)
		var out []any
		for _, e := range x {
			m, ok := e.(map[string]any)
			if !ok {
				continue
			}
			var sub map[string]any
			if len(out) < len(prev) {
				sub, _ = prev[len(out)].(map[string]any)
			}
			if sub == nil {
				sub = map[string]any{}
			}
			include(m, sub, path[1:])
			out = append(out, sub)
		}
		if out == nil {
			out = []any{}
		}
		dst[path[0]] = out
	}
}
