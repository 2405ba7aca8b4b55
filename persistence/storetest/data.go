package storetest

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/weftdev/weft/persistence"
)

// dataCases check the DATABASE node's data space: the same table of
// filters, sorts and writes must give the same answers on every adapter.
var dataCases = []struct {
	name string
	fn   func(t *testing.T, b *bundle)
}{
	{"DataFilters", testDataFilters},
	{"DataSorts", testDataSorts},
	{"DataProjection", testDataProjection},
	{"DataUpdates", testDataUpdates},
	{"DataUpdateErrors", testDataUpdateErrors},
	{"DataDeletesAndCount", testDataDeletesAndCount},
	{"DataInserts", testDataInserts},
	{"DataInsertInvalid", testDataInsertInvalid},
	{"DataIdempotentWrites", testDataIdempotentWrites},
	{"DataIsolation", testDataIsolation},
	{"DataLimits", testDataLimits},
	{"DataInvalidRequests", testDataInvalidRequests},
	{"DataLongFilters", testDataLongFilters},
	{"DataConcurrentOneWrites", testDataConcurrentOneWrites},
	{"DataUpdateManyBytes", testDataUpdateManyBytes},
}

// seed is the collection the read cases query; ids sort in the order the
// documents are listed.
var seed = []string{
	`{"_id": "01", "n": 1, "s": "a", "tags": ["x", "y"], "o": {"k": 1}, "b": true}`,
	`{"_id": "02", "n": 2.5, "s": "b", "tags": ["y"], "o": {"k": 2}, "b": false}`,
	`{"_id": "03", "n": "3", "s": null, "tags": [], "items": [{"k": 1}, {"k": 5}]}`,
	`{"_id": "04", "s": "c", "items": [{"k": 2}, {"j": 1}], "o": {"k": {"deep": true}}}`,
	`{"_id": "05", "n": 10, "nums": [1, 5], "o": {"k": "1"}}`,
	`{"_id": "06", "n": -1, "s": "ä", "nums": [0, 7], "items": [{"k": null}]}`,
	`{"_id": "07", "n": null, "tags": ["x"], "mixed": [1, "1", true, null, {"a": 1}]}`,
	`{"_id": "08", "n": 1e21, "s": "B"}`,
}

func obj(t *testing.T, s string) map[string]any {
	t.Helper()
	if s == "" {
		return nil
	}
	var m map[string]any
	require.NoError(t, json.Unmarshal([]byte(s), &m), s)
	return m
}

func (b *bundle) data(t *testing.T) persistence.DataStore {
	t.Helper()
	ds, ok := b.store.(persistence.DataStore)
	require.True(t, ok, "the store must implement persistence.DataStore")
	return ds
}

// run runs a request that must succeed.
func (b *bundle) run(t *testing.T, req persistence.DataRequest) *persistence.DataResult {
	t.Helper()
	res, err := b.data(t).Data(b.ctx, req)
	require.NoError(t, err, "%+v", req)
	return res
}

// seedData inserts the seed documents into coll for owner.
func (b *bundle) seedData(t *testing.T, owner *persistence.User, coll string) {
	t.Helper()
	docs := make([]any, len(seed))
	for i, s := range seed {
		docs[i] = obj(t, s)
	}
	res := b.run(t, persistence.DataRequest{UserID: owner.ID, Collection: coll, Operation: persistence.OpInsertMany, Documents: docs})
	require.Len(t, res.InsertedIDs, len(seed))
}

func ids(docs []map[string]any) []string {
	out := make([]string, 0, len(docs))
	for _, d := range docs {
		id, _ := d["_id"].(string)
		out = append(out, id)
	}
	return out
}

func testDataFilters(t *testing.T, b *bundle) {
	b.seedData(t, b.ann, "things")
	all := []string{"01", "02", "03", "04", "05", "06", "07", "08"}
	for _, tc := range []struct {
		filter string
		want   []string
	}{
		{`{}`, all},
		{`{"n": 1}`, []string{"01"}},
		{`{"n": "3"}`, []string{"03"}},
		{`{"n": {"$eq": 1e21}}`, []string{"08"}},
		{`{"n": {"$gt": 1}}`, []string{"02", "05", "08"}},
		{`{"n": {"$gte": 1, "$lt": 10}}`, []string{"01", "02"}},
		{`{"n": {"$lt": "4"}}`, []string{"03"}},
		{`{"n": null}`, []string{"04", "07"}},
		{`{"n": {"$ne": null}}`, []string{"01", "02", "03", "05", "06", "08"}},
		{`{"n": {"$exists": false}}`, []string{"04"}},
		{`{"n": {"$exists": true}}`, []string{"01", "02", "03", "05", "06", "07", "08"}},
		{`{"n": {"$in": [null, 1]}}`, []string{"01", "04", "07"}},
		{`{"tags": "x"}`, []string{"01", "07"}},
		{`{"tags": ["x", "y"]}`, []string{"01"}},
		{`{"tags": ["y", "x"]}`, nil},
		{`{"tags": []}`, []string{"03"}},
		{`{"tags": {"$ne": "x"}}`, []string{"02", "03", "04", "05", "06", "08"}},
		{`{"tags": {"$in": ["y", "z"]}}`, []string{"01", "02"}},
		{`{"tags": {"$nin": ["y"]}}`, []string{"03", "04", "05", "06", "07", "08"}},
		{`{"nums": {"$gt": 4, "$lt": 6}}`, []string{"05", "06"}},
		{`{"items.k": 5}`, []string{"03"}},
		{`{"items.k": {"$gte": 2}}`, []string{"03", "04"}},
		{`{"items.k": {"$exists": true}}`, []string{"03", "04", "06"}},
		{`{"items": {"k": 1}}`, []string{"03"}},
		{`{"items": {"$ne": {"k": 1}}}`, []string{"01", "02", "04", "05", "06", "07", "08"}},
		{`{"items": {"$in": [{"k": 2}, "zz"]}}`, []string{"04"}},
		{`{"items": {"$nin": [{"k": 2}, {"k": 5}]}}`, []string{"01", "02", "05", "06", "07", "08"}},
		{`{"items": {"$not": {"$eq": {"k": null}}}}`, []string{"01", "02", "03", "04", "05", "07", "08"}},
		{`{"items.k": null}`, []string{"01", "02", "05", "06", "07", "08"}},
		{`{"o.k": 1}`, []string{"01"}},
		{`{"o.k": {"$gt": 0}}`, []string{"01", "02"}},
		{`{"o": {"k": 2}}`, []string{"02"}},
		{`{"o.k.deep": true}`, []string{"04"}},
		{`{"b": false}`, []string{"02"}},
		{`{"b": {"$gt": false}}`, []string{"01"}},
		{`{"b": {"$lt": 1}}`, nil},
		{`{"$or": [{"n": 1}, {"s": "c"}]}`, []string{"01", "04"}},
		{`{"$and": [{"n": {"$exists": true}}, {"n": {"$not": {"$gt": 1}}}]}`, []string{"01", "03", "06", "07"}},
		{`{"s": {"$gt": "b"}}`, []string{"04", "06"}},
		{`{"s": {"$nin": ["a", null]}}`, []string{"02", "04", "06", "08"}},
		{`{"mixed": {"a": 1}}`, []string{"07"}},
		{`{"mixed": "1"}`, []string{"07"}},
		{`{"mixed": null}`, []string{"01", "02", "03", "04", "05", "06", "07", "08"}},
		{`{"_id": "05"}`, []string{"05"}},
		{`{"_id": {"$in": ["01", "08", "zz"]}}`, []string{"01", "08"}},
		{`{"$or": [{"n": {"$lt": 0}}, {"tags": "y"}], "s": {"$exists": true}}`, []string{"01", "02", "06"}},
		{`{"n": {"$not": {"$in": [1, 10]}}}`, []string{"02", "03", "04", "06", "07", "08"}},
	} {
		t.Run(tc.filter, func(t *testing.T) {
			res := b.run(t, persistence.DataRequest{UserID: b.ann.ID, Collection: "things", Operation: persistence.OpFind, Filter: obj(t, tc.filter)})
			want := tc.want
			if want == nil {
				want = []string{}
			}
			require.Equal(t, want, ids(res.Documents))
			n := b.run(t, persistence.DataRequest{UserID: b.ann.ID, Collection: "things", Operation: persistence.OpCount, Filter: obj(t, tc.filter)})
			require.Equal(t, int64(len(want)), n.Count)
		})
	}
}

func testDataSorts(t *testing.T, b *bundle) {
	b.seedData(t, b.ann, "things")
	asc := func(p string) persistence.SortKey { return persistence.SortKey{Path: p} }
	desc := func(p string) persistence.SortKey { return persistence.SortKey{Path: p, Desc: true} }
	for _, tc := range []struct {
		name  string
		sort  []persistence.SortKey
		limit int
		want  []string
	}{
		{"n asc", []persistence.SortKey{asc("n")}, 0, []string{"04", "07", "06", "01", "02", "05", "08", "03"}},
		{"n desc", []persistence.SortKey{desc("n")}, 0, []string{"03", "08", "05", "02", "01", "06", "04", "07"}},
		{"nums asc", []persistence.SortKey{asc("nums")}, 0, []string{"01", "02", "03", "04", "07", "08", "06", "05"}},
		{"nums desc", []persistence.SortKey{desc("nums")}, 0, []string{"06", "05", "01", "02", "03", "04", "07", "08"}},
		{"tags asc", []persistence.SortKey{asc("tags")}, 0, []string{"03", "04", "05", "06", "08", "01", "07", "02"}},
		{"s asc, _id desc", []persistence.SortKey{asc("s"), desc("_id")}, 0, []string{"07", "05", "03", "08", "01", "02", "04", "06"}},
		{"b desc", []persistence.SortKey{desc("b")}, 0, []string{"01", "02", "03", "04", "05", "06", "07", "08"}},
		{"o.k asc", []persistence.SortKey{asc("o.k")}, 0, []string{"03", "06", "07", "08", "01", "02", "05", "04"}},
		{"n asc limit 2", []persistence.SortKey{asc("n")}, 2, []string{"04", "07"}},
		{"none limit 3", nil, 3, []string{"01", "02", "03"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := b.run(t, persistence.DataRequest{UserID: b.ann.ID, Collection: "things", Operation: persistence.OpFind, Sort: tc.sort, Limit: tc.limit})
			require.Equal(t, tc.want, ids(res.Documents))
		})
	}
	one := b.run(t, persistence.DataRequest{UserID: b.ann.ID, Collection: "things", Operation: persistence.OpFindOne, Sort: []persistence.SortKey{desc("n")}})
	require.Equal(t, "03", one.Document["_id"])
	one = b.run(t, persistence.DataRequest{UserID: b.ann.ID, Collection: "things", Operation: persistence.OpFindOne, Filter: obj(t, `{"n": {"$gt": 1}}`)})
	require.Equal(t, "02", one.Document["_id"], "findOne without sort takes the least _id")
	none := b.run(t, persistence.DataRequest{UserID: b.ann.ID, Collection: "things", Operation: persistence.OpFindOne, Filter: obj(t, `{"n": 99}`)})
	require.Nil(t, none.Document)
	require.Equal(t, map[string]any{"document": nil}, none.Output(persistence.OpFindOne))
}

func testDataProjection(t *testing.T, b *bundle) {
	b.seedData(t, b.ann, "things")
	for _, tc := range []struct{ id, projection, want string }{
		{"04", `{"s": 1}`, `{"_id": "04", "s": "c"}`},
		{"04", `{"items.k": 1, "_id": 0}`, `{"items": [{"k": 2}, {}]}`},
		{"04", `{"o": 0, "items": 0, "_id": 0}`, `{"s": "c"}`},
		{"01", `{"o.k": 1, "b": true}`, `{"_id": "01", "o": {"k": 1}, "b": true}`},
		{"01", `{"_id": 1}`, `{"_id": "01"}`},
		{"01", `{"missing": 1}`, `{"_id": "01"}`},
	} {
		t.Run(tc.projection, func(t *testing.T) {
			res := b.run(t, persistence.DataRequest{UserID: b.ann.ID, Collection: "things", Operation: persistence.OpFindOne,
				Filter: map[string]any{"_id": tc.id}, Projection: obj(t, tc.projection)})
			require.Equal(t, obj(t, tc.want), res.Document)
		})
	}
}

// find returns the user's document id in coll, or nil.
func (b *bundle) find(t *testing.T, owner *persistence.User, coll, id string) map[string]any {
	t.Helper()
	return b.run(t, persistence.DataRequest{UserID: owner.ID, Collection: coll, Operation: persistence.OpFindOne, Filter: map[string]any{"_id": id}}).Document
}

func testDataUpdates(t *testing.T, b *bundle) {
	b.seedData(t, b.ann, "things")
	upd := func(op, filter, update string) *persistence.DataResult {
		return b.run(t, persistence.DataRequest{UserID: b.ann.ID, Collection: "things", Operation: op, Filter: obj(t, filter), Update: obj(t, update)})
	}
	res := upd(persistence.OpUpdateOne, `{"n": {"$gt": 1}}`, `{"$inc": {"n": 1}, "$set": {"o.k": 9}, "$push": {"tags": "z"}}`)
	require.Equal(t, map[string]any{"matched": int64(1), "modified": int64(1)}, res.Output(persistence.OpUpdateOne))
	require.Equal(t, obj(t, `{"_id": "02", "n": 3.5, "s": "b", "tags": ["y", "z"], "o": {"k": 9}, "b": false}`), b.find(t, b.ann, "things", "02"))

	res = upd(persistence.OpUpdateMany, `{"tags": "x"}`, `{"$set": {"flag": true}}`)
	require.Equal(t, [2]int64{2, 2}, [2]int64{res.Matched, res.Modified})
	res = upd(persistence.OpUpdateMany, `{"tags": "x"}`, `{"$set": {"flag": true}}`)
	require.Equal(t, [2]int64{2, 0}, [2]int64{res.Matched, res.Modified}, "setting the same value modifies nothing")

	res = upd(persistence.OpUpdateMany, `{}`, `{"$unset": {"o": ""}}`)
	require.Equal(t, [2]int64{8, 4}, [2]int64{res.Matched, res.Modified})
	require.Zero(t, b.run(t, persistence.DataRequest{UserID: b.ann.ID, Collection: "things", Operation: persistence.OpCount, Filter: obj(t, `{"o": {"$exists": true}}`)}).Count)

	res = upd(persistence.OpUpdateOne, `{"_id": "08"}`, `{"$set": {"a.b.c": 1}, "$inc": {"cnt": 2}, "$push": {"list": {"x": 1}}}`)
	require.Equal(t, [2]int64{1, 1}, [2]int64{res.Matched, res.Modified})
	require.Equal(t, obj(t, `{"_id": "08", "n": 1e21, "s": "B", "a": {"b": {"c": 1}}, "cnt": 2, "list": [{"x": 1}]}`), b.find(t, b.ann, "things", "08"))

	res = upd(persistence.OpUpdateOne, `{"_id": "nope"}`, `{"$set": {"a": 1}}`)
	require.Equal(t, [2]int64{0, 0}, [2]int64{res.Matched, res.Modified})
	res = upd(persistence.OpUpdateMany, `{"items.k": {"$gte": 2}}`, `{"$inc": {"hits": 1}}`)
	require.Equal(t, [2]int64{2, 2}, [2]int64{res.Matched, res.Modified})
}

func testDataUpdateErrors(t *testing.T, b *bundle) {
	b.seedData(t, b.ann, "things")
	for _, tc := range []struct{ filter, update, code string }{
		{`{"_id": "03"}`, `{"$inc": {"n": 1}}`, persistence.CodeDataInvalid},
		{`{"_id": "01"}`, `{"$set": {"n.x": 1}}`, persistence.CodeDataInvalid},
		{`{"_id": "05"}`, `{"$push": {"n": 1}}`, persistence.CodeDataInvalid},
		{`{"_id": "01"}`, `{"$set": {"_id": "x"}}`, persistence.CodeDataInvalid},
		{`{"_id": "01"}`, `{"$set": {"a": 1}, "$inc": {"a.b": 1}}`, persistence.CodeDataInvalid},
		{`{"_id": "01"}`, `{"$rename": {"a": "b"}}`, persistence.CodeDataInvalid},
		{`{"_id": "01"}`, `{"$push": {"tags": [1]}}`, persistence.CodeDataInvalid},
	} {
		t.Run(tc.update, func(t *testing.T) {
			_, err := b.data(t).Data(b.ctx, persistence.DataRequest{UserID: b.ann.ID, Collection: "things",
				Operation: persistence.OpUpdateOne, Filter: obj(t, tc.filter), Update: obj(t, tc.update)})
			requireCode(t, tc.code, err)
		})
	}
	// Nothing changed.
	require.Equal(t, obj(t, seed[2]), b.find(t, b.ann, "things", "03"))
	require.Equal(t, obj(t, seed[0]), b.find(t, b.ann, "things", "01"))
}

func testDataDeletesAndCount(t *testing.T, b *bundle) {
	b.seedData(t, b.ann, "things")
	res := b.run(t, persistence.DataRequest{UserID: b.ann.ID, Collection: "things", Operation: persistence.OpDeleteOne, Filter: obj(t, `{"n": {"$gt": 1}}`)})
	require.Equal(t, map[string]any{"deleted": int64(1)}, res.Output(persistence.OpDeleteOne))
	require.Nil(t, b.find(t, b.ann, "things", "02"))
	res = b.run(t, persistence.DataRequest{UserID: b.ann.ID, Collection: "things", Operation: persistence.OpDeleteMany, Filter: obj(t, `{"tags": {"$exists": true}}`)})
	require.Equal(t, int64(3), res.Deleted)
	res = b.run(t, persistence.DataRequest{UserID: b.ann.ID, Collection: "things", Operation: persistence.OpCount})
	require.Equal(t, map[string]any{"count": int64(4)}, res.Output(persistence.OpCount))
	res = b.run(t, persistence.DataRequest{UserID: b.ann.ID, Collection: "things", Operation: persistence.OpCount, Limit: 2})
	require.Equal(t, int64(2), res.Count)
	res = b.run(t, persistence.DataRequest{UserID: b.ann.ID, Collection: "things", Operation: persistence.OpDeleteMany, Filter: obj(t, `{"n": 12345}`)})
	require.Zero(t, res.Deleted)
	res = b.run(t, persistence.DataRequest{UserID: b.ann.ID, Collection: "things", Operation: persistence.OpDeleteMany})
	require.Equal(t, int64(4), res.Deleted)
	res = b.run(t, persistence.DataRequest{UserID: b.ann.ID, Collection: "empty", Operation: persistence.OpFind})
	require.Equal(t, map[string]any{"documents": []map[string]any{}}, res.Output(persistence.OpFind))
}

func testDataInserts(t *testing.T, b *bundle) {
	ins := func(key string, docs ...string) (*persistence.DataResult, error) {
		req := persistence.DataRequest{UserID: b.ann.ID, Collection: "orders", IdempotencyKey: key}
		if len(docs) == 1 {
			req.Operation, req.Document = persistence.OpInsertOne, obj(t, docs[0])
		} else {
			req.Operation = persistence.OpInsertMany
			for _, d := range docs {
				req.Documents = append(req.Documents, obj(t, d))
			}
		}
		return b.data(t).Data(b.ctx, req)
	}
	count := func() int64 {
		return b.run(t, persistence.DataRequest{UserID: b.ann.ID, Collection: "orders", Operation: persistence.OpCount}).Count
	}

	// A missing _id is made from the key, so a retry names the same one.
	first, err := ins("ex1:save", `{"total": 5}`)
	require.NoError(t, err)
	require.Len(t, first.InsertedIDs, 1)
	again, err := ins("ex1:save", `{"total": 5}`)
	require.NoError(t, err)
	require.Equal(t, first.InsertedIDs, again.InsertedIDs)
	require.Equal(t, int64(1), count())
	got := b.find(t, b.ann, "orders", first.InsertedIDs[0])
	require.Equal(t, map[string]any{"_id": first.InsertedIDs[0], "total": 5.0}, got)

	many, err := ins("ex2:save", `{"i": 1}`, `{"i": 2}`, `{"_id": "mine", "i": 3}`)
	require.NoError(t, err)
	require.Len(t, many.InsertedIDs, 3)
	require.Equal(t, "mine", many.InsertedIDs[2])
	require.NotEqual(t, many.InsertedIDs[0], many.InsertedIDs[1])
	again, err = ins("ex2:save", `{"i": 1}`, `{"i": 2}`, `{"_id": "mine", "i": 3}`)
	require.NoError(t, err)
	require.Equal(t, many.InsertedIDs, again.InsertedIDs)
	require.Equal(t, int64(4), count())

	// Another key naming a stored _id is a conflict.
	_, err = ins("ex3:save", `{"_id": "mine"}`)
	requireCode(t, persistence.CodeDataConflict, err)
	_, err = ins("", `{"_id": "mine"}`)
	requireCode(t, persistence.CodeDataConflict, err)
	require.Equal(t, int64(4), count())

	// Without a key every insert is new.
	a, err := ins("", `{"k": 1}`)
	require.NoError(t, err)
	c, err := ins("", `{"k": 1}`)
	require.NoError(t, err)
	require.NotEqual(t, a.InsertedIDs, c.InsertedIDs)
	require.Equal(t, int64(6), count())

	// Values come back as JSON numbers, whatever Go type they went in as.
	res, err := b.data(t).Data(b.ctx, persistence.DataRequest{UserID: b.ann.ID, Collection: "typed", Operation: persistence.OpInsertOne,
		Document: map[string]any{"_id": "t", "i": 7, "f": float32(0.5), "l": []any{int64(1), "two"}, "m": map[string]any{"z": nil, "a": true}}})
	require.NoError(t, err)
	require.Equal(t, []string{"t"}, res.InsertedIDs)
	require.Equal(t, map[string]any{"_id": "t", "i": 7.0, "f": 0.5, "l": []any{1.0, "two"}, "m": map[string]any{"z": nil, "a": true}}, b.find(t, b.ann, "typed", "t"))
}

func testDataInsertInvalid(t *testing.T, b *bundle) {
	for _, tc := range []struct {
		doc  any
		code string
	}{
		{map[string]any{"$set": 1}, persistence.CodeDataInvalid},
		{map[string]any{"a.b": 1}, persistence.CodeDataInvalid},
		{map[string]any{"a": map[string]any{"": 1}}, persistence.CodeDataInvalid},
		{map[string]any{"a": []any{[]any{1}}}, persistence.CodeDataInvalid},
		{map[string]any{"_id": 5}, persistence.CodeDataInvalid},
		{map[string]any{"_id": ""}, persistence.CodeDataInvalid},
		{"not an object", persistence.CodeDataInvalid},
		{[]any{1}, persistence.CodeDataInvalid},
		{map[string]any{"big": string(make([]byte, 2048))}, persistence.CodeDataTooLarge},
	} {
		t.Run(fmt.Sprint(tc.doc)[:min(20, len(fmt.Sprint(tc.doc)))], func(t *testing.T) {
			_, err := b.data(t).Data(b.ctx, persistence.DataRequest{UserID: b.ann.ID, Collection: "bad", Operation: persistence.OpInsertOne,
				Document: tc.doc, MaxDocumentBytes: 1024})
			requireCode(t, tc.code, err)
		})
	}
	require.Zero(t, b.run(t, persistence.DataRequest{UserID: b.ann.ID, Collection: "bad", Operation: persistence.OpCount}).Count)

	docs := make([]any, persistence.MaxInsertDocuments+1)
	for i := range docs {
		docs[i] = map[string]any{}
	}
	_, err := b.data(t).Data(b.ctx, persistence.DataRequest{UserID: b.ann.ID, Collection: "bad", Operation: persistence.OpInsertMany, Documents: docs})
	requireCode(t, persistence.CodeDataInvalid, err)
	_, err = b.data(t).Data(b.ctx, persistence.DataRequest{UserID: b.ann.ID, Collection: "bad", Operation: persistence.OpInsertMany,
		Documents: []any{map[string]any{"_id": "x"}, map[string]any{"_id": "x"}}})
	requireCode(t, persistence.CodeDataInvalid, err)
}

// testDataIdempotentWrites redelivers writes under the same key: each is
// applied once and answers the same.
func testDataIdempotentWrites(t *testing.T, b *bundle) {
	b.seedData(t, b.ann, "things")
	req := persistence.DataRequest{UserID: b.ann.ID, Collection: "things", Operation: persistence.OpUpdateOne,
		Filter: obj(t, `{"_id": "01"}`), Update: obj(t, `{"$inc": {"n": 1}}`), IdempotencyKey: "ex9:bump"}
	first := b.run(t, req)
	second := b.run(t, req)
	require.Equal(t, first.Output(req.Operation), second.Output(req.Operation))
	require.Equal(t, 2.0, b.find(t, b.ann, "things", "01")["n"])

	req = persistence.DataRequest{UserID: b.ann.ID, Collection: "things", Operation: persistence.OpUpdateMany,
		Filter: obj(t, `{"tags": {"$exists": true}}`), Update: obj(t, `{"$inc": {"visits": 1}}`), IdempotencyKey: "ex9:many"}
	first = b.run(t, req)
	require.Equal(t, int64(4), first.Matched)
	second = b.run(t, req)
	require.Equal(t, first.Output(req.Operation), second.Output(req.Operation))
	for _, id := range []string{"01", "02", "03", "07"} {
		require.Equal(t, 1.0, b.find(t, b.ann, "things", id)["visits"], id)
	}

	del := persistence.DataRequest{UserID: b.ann.ID, Collection: "things", Operation: persistence.OpDeleteMany,
		Filter: obj(t, `{"visits": 1}`), IdempotencyKey: "ex9:del"}
	first = b.run(t, del)
	require.Equal(t, int64(4), first.Deleted)
	second = b.run(t, del)
	require.Equal(t, first.Output(del.Operation), second.Output(del.Operation))

	// The same key of another user is another write.
	b.seedData(t, b.bob, "things")
	bobReq := req
	bobReq.UserID = b.bob.ID
	require.Equal(t, int64(4), b.run(t, bobReq).Matched)
	require.Equal(t, 1.0, b.find(t, b.bob, "things", "01")["visits"])
}

// testDataIsolation checks that no request of bob's reaches ann's data,
// whatever its collection, filter or _id says.
func testDataIsolation(t *testing.T, b *bundle) {
	ann := b.run(t, persistence.DataRequest{UserID: b.ann.ID, Collection: "orders", Operation: persistence.OpInsertOne, Document: obj(t, `{"_id": "a", "who": "ann"}`)})
	bob := b.run(t, persistence.DataRequest{UserID: b.bob.ID, Collection: "orders", Operation: persistence.OpInsertOne, Document: obj(t, `{"_id": "a", "who": "bob"}`)})
	require.Equal(t, ann.InsertedIDs, bob.InsertedIDs, "two users may use the same _id")

	for _, f := range []string{
		`{}`,
		`{"_id": "a"}`,
		`{"$or": [{"who": "ann"}, {"who": {"$exists": false}}, {}]}`,
		`{"$or": [{"u": "` + b.ann.ID + `"}, {"userId": "` + b.ann.ID + `"}, {"user_id": "` + b.ann.ID + `"}]}`,
		`{"doc.who": "ann"}`,
		`{"who": {"$ne": "bob"}}`,
	} {
		res := b.run(t, persistence.DataRequest{UserID: b.bob.ID, Collection: "orders", Operation: persistence.OpFind, Filter: obj(t, f)})
		for _, d := range res.Documents {
			require.Equal(t, "bob", d["who"], "filter %s", f)
		}
	}
	res := b.run(t, persistence.DataRequest{UserID: b.bob.ID, Collection: "orders", Operation: persistence.OpUpdateMany, Update: obj(t, `{"$set": {"who": "mallory"}}`)})
	require.Equal(t, int64(1), res.Matched)
	res = b.run(t, persistence.DataRequest{UserID: b.bob.ID, Collection: "Orders", Operation: persistence.OpCount})
	require.Zero(t, res.Count, "collection names are case-sensitive")
	// bob's insert of ann's _id under ann's key stays in bob's space.
	res = b.run(t, persistence.DataRequest{UserID: b.bob.ID, Collection: "other", Operation: persistence.OpInsertOne, Document: obj(t, `{"_id": "a"}`)})
	require.Equal(t, []string{"a"}, res.InsertedIDs)
	res = b.run(t, persistence.DataRequest{UserID: b.bob.ID, Collection: "orders", Operation: persistence.OpDeleteMany})
	require.Equal(t, int64(1), res.Deleted)

	require.Equal(t, map[string]any{"_id": "a", "who": "ann"}, b.find(t, b.ann, "orders", "a"))
	require.Equal(t, int64(1), b.run(t, persistence.DataRequest{UserID: b.ann.ID, Collection: "orders", Operation: persistence.OpCount}).Count)
	require.Zero(t, b.run(t, persistence.DataRequest{UserID: b.ann.ID, Collection: "other", Operation: persistence.OpCount}).Count)
}

func testDataLimits(t *testing.T, b *bundle) {
	b.seedData(t, b.ann, "things")
	_, err := b.data(t).Data(b.ctx, persistence.DataRequest{UserID: b.ann.ID, Collection: "things", Operation: persistence.OpFind, MaxResultBytes: 200})
	requireCode(t, persistence.CodeDataTooLarge, err)
	res, err := b.data(t).Data(b.ctx, persistence.DataRequest{UserID: b.ann.ID, Collection: "things", Operation: persistence.OpFind, MaxResultBytes: 200, Limit: 1})
	require.NoError(t, err)
	require.Len(t, res.Documents, 1)

	ctx, cancel := context.WithDeadline(b.ctx, time.Now().Add(-time.Second))
	defer cancel()
	for _, op := range []string{persistence.OpFind, persistence.OpCount, persistence.OpDeleteMany} {
		_, err = b.data(t).Data(ctx, persistence.DataRequest{UserID: b.ann.ID, Collection: "things", Operation: op})
		requireCode(t, persistence.CodeDataTimeout, err)
	}
	require.Equal(t, int64(8), b.run(t, persistence.DataRequest{UserID: b.ann.ID, Collection: "things", Operation: persistence.OpCount}).Count)
}

func testDataInvalidRequests(t *testing.T, b *bundle) {
	base := func() persistence.DataRequest {
		return persistence.DataRequest{UserID: b.ann.ID, Collection: "things", Operation: persistence.OpFind}
	}
	cases := map[string]func(r *persistence.DataRequest){
		"unknown operation":     func(r *persistence.DataRequest) { r.Operation = "aggregate" },
		"no user":               func(r *persistence.DataRequest) { r.UserID = "" },
		"bad collection":        func(r *persistence.DataRequest) { r.Collection = "a/b" },
		"collection $":          func(r *persistence.DataRequest) { r.Collection = "$cmd" },
		"$where":                func(r *persistence.DataRequest) { r.Filter = obj(t, `{"$where": "1"}`) },
		"$regex":                func(r *persistence.DataRequest) { r.Filter = obj(t, `{"a": {"$regex": "x"}}`) },
		"nested $or in field":   func(r *persistence.DataRequest) { r.Filter = obj(t, `{"a": {"$or": [1]}}`) },
		"mixed operator":        func(r *persistence.DataRequest) { r.Filter = obj(t, `{"a": {"$gt": 1, "b": 2}}`) },
		"index path":            func(r *persistence.DataRequest) { r.Filter = obj(t, `{"a.0": 1}`) },
		"empty segment":         func(r *persistence.DataRequest) { r.Filter = obj(t, `{"a..b": 1}`) },
		"$gt object":            func(r *persistence.DataRequest) { r.Filter = obj(t, `{"a": {"$gt": {"x": 1}}}`) },
		"$gt null":              func(r *persistence.DataRequest) { r.Filter = obj(t, `{"a": {"$gt": null}}`) },
		"$in not a list":        func(r *persistence.DataRequest) { r.Filter = obj(t, `{"a": {"$in": 1}}`) },
		"$exists not bool":      func(r *persistence.DataRequest) { r.Filter = obj(t, `{"a": {"$exists": 1}}`) },
		"$not value":            func(r *persistence.DataRequest) { r.Filter = obj(t, `{"a": {"$not": 1}}`) },
		"$or empty":             func(r *persistence.DataRequest) { r.Filter = obj(t, `{"$or": []}`) },
		"limit too big":         func(r *persistence.DataRequest) { r.Limit = 1001 },
		"sort path":             func(r *persistence.DataRequest) { r.Sort = []persistence.SortKey{{Path: "$a"}} },
		"projection mixed":      func(r *persistence.DataRequest) { r.Projection = obj(t, `{"a": 1, "b": 0}`) },
		"projection value":      func(r *persistence.DataRequest) { r.Projection = obj(t, `{"a": 2}`) },
		"update on find":        func(r *persistence.DataRequest) { r.Update = obj(t, `{"$set": {"a": 1}}`) },
		"update without update": func(r *persistence.DataRequest) { r.Operation = persistence.OpUpdateOne },
		"insert without doc":    func(r *persistence.DataRequest) { r.Operation = persistence.OpInsertOne },
		"sort on count": func(r *persistence.DataRequest) {
			r.Operation, r.Sort = persistence.OpCount, []persistence.SortKey{{Path: "a"}}
		},
	}
	names := make([]string, 0, len(cases))
	for n := range cases {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		t.Run(n, func(t *testing.T) {
			r := base()
			cases[n](&r)
			_, err := b.data(t).Data(b.ctx, r)
			requireCode(t, persistence.CodeDataInvalid, err)
		})
	}
}
