package mongo

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/weftdev/weft/events"
	"github.com/weftdev/weft/persistence"
)

// The data space of the DATABASE node (semantics in persistence/data.go).
// Every user's documents share one collection:
//
//	data        _id = "<len(userId)>:<userId>/<collection>/<id>", so two
//	            users (or collections) never share one; u and c hold the
//	            owner and the collection and are ANDed into every filter;
//	            doc is the user's document, and every user path is
//	            translated under "doc.", so no filter can name u or c.
//	            ins is the idempotency key of the insert that stored it,
//	            ops the keys of the last updates applied to it, v a
//	            version bumped by each update.
//	dataWrites  _id = "<len(userId)>:<userId>/<key>"; a write's result,
//	            inserted once the write is done and returned on redelivery,
//	            kept for persistence.DataWriteRetention (writesExpiry).
//
// Filters run on the server, translated to BSON. Updates are computed in
// Go by the plan (the same code as the embedded store, so $inc on a string
// fails alike) and written back as {$set: {doc}} conditional on the
// version read, retried when another update came first. On MongoDB that
// condition is atomic; FerretDB v1 runs an update as a read then a
// replace, so there two updates racing on one document may lose one.
//
// Redelivery: an insert makes the same _ids and recognises its own
// documents by ins. An update marks each document it changes with its key
// in ops (filtering on ops != key), so a retry after a crash halfway
// changes only the rest and counts the marked ones as matched and
// modified. A delete leaves no document to mark: a retry after a crash
// halfway deletes what still matches and reports only that; once a write
// has finished, its recorded result is returned as it was.

// Collections of the data space.
const (
	colData       = "data"
	colDataWrites = "dataWrites"
)

// opsKept is how many update keys a document remembers; a redelivery
// comes long before that many other updates.
const opsKept = 16

// dataBatch keeps multi-document writes under FerretDB v1's limit.
const dataBatch = 40

var _ persistence.DataStore = (*Store)(nil)

// dataDoc is one stored document of the data space.
type dataDoc struct {
	ID  string   `bson:"_id"`
	Doc bson.D   `bson:"doc"`
	Ins string   `bson:"ins,omitempty"`
	Ops []string `bson:"ops,omitempty"`
	V   int64    `bson:"v"`
}

func dataID(userID, collection, id string) string {
	return strconv.Itoa(len(userID)) + ":" + userID + "/" + collection + "/" + id
}

func dataWriteID(userID, key string) string {
	return strconv.Itoa(len(userID)) + ":" + userID + "/" + key
}

// Data runs one operation on the user's data space.
func (s *Store) Data(ctx context.Context, req persistence.DataRequest) (*persistence.DataResult, error) {
	p, err := persistence.PlanData(req)
	if err != nil {
		return nil, err
	}
	var res *persistence.DataResult
	switch p.Op {
	case persistence.OpFind, persistence.OpFindOne:
		res, err = s.dataFind(ctx, p)
	case persistence.OpCount:
		res, err = s.dataCount(ctx, p)
	case persistence.OpInsertOne, persistence.OpInsertMany:
		res, err = s.dataWrite(ctx, p, s.dataInsert)
	case persistence.OpUpdateOne, persistence.OpUpdateMany:
		res, err = s.dataWrite(ctx, p, s.dataUpdate)
	default:
		res, err = s.dataWrite(ctx, p, s.dataDelete)
	}
	if err != nil {
		return nil, dataErr(ctx, err)
	}
	return res, nil
}

// dataErr reports a deadline as db_timeout; a cancel stays the context's
// error, which the node reports as cancelled.
func dataErr(ctx context.Context, err error) error {
	var coded *events.Error
	switch {
	case errors.Is(ctx.Err(), context.DeadlineExceeded) || mongo.IsTimeout(err):
		return &events.Error{Code: persistence.CodeDataTimeout, Message: "the operation ran past its time limit", Err: err}
	case ctx.Err() != nil:
		return ctx.Err()
	case errors.As(err, &coded):
		return err
	}
	return internal(err)
}

// owned is the filter of the plan's documents: owner and collection, and
// the user's filter under doc.
func owned(p *persistence.DataPlan, extra ...bson.E) bson.D {
	f := bson.D{{Key: "u", Value: p.UserID}, {Key: "c", Value: p.Collection}}
	if p.Filter != nil {
		f = append(f, bson.E{Key: "$and", Value: bson.A{filterBSON(p.Filter)}})
	}
	return append(f, extra...)
}

func docPath(path []string) string { return "doc." + strings.Join(path, ".") }

// filterBSON translates a condition tree to a MongoDB filter. Negations
// become $nor of the positive form, which is what $ne, $nin and $not mean
// in MongoDB. Equality with an object is spelled out as "equals, or is an
// element of": MongoDB matches array elements on its own, but FerretDB v1
// compares an object only with the whole value, and $all finds it among
// elements on both.
func filterBSON(c *persistence.Cond) bson.D {
	switch c.Op {
	case "$and", "$or":
		parts := make(bson.A, 0, len(c.Subs))
		for _, s := range c.Subs {
			parts = append(parts, filterBSON(s))
		}
		if len(parts) == 0 {
			return bson.D{}
		}
		return bson.D{{Key: c.Op, Value: parts}}
	case "$not":
		return nor(filterBSON(&persistence.Cond{Op: "$and", Subs: c.Subs}))
	case "$eq":
		return eqAny(c.Path, []any{c.Value})
	case "$ne":
		return nor(eqAny(c.Path, []any{c.Value}))
	case "$in":
		return eqAny(c.Path, c.Values)
	case "$nin":
		return nor(eqAny(c.Path, c.Values))
	default:
		return bson.D{{Key: docPath(c.Path), Value: bson.D{{Key: c.Op, Value: toBSON(c.Value)}}}}
	}
}

func nor(f bson.D) bson.D { return bson.D{{Key: "$nor", Value: bson.A{f}}} }

// eqAny is "the value at path, or one of its elements, equals one of vals".
func eqAny(path []string, vals []any) bson.D {
	p := docPath(path)
	var plain bson.A
	var alts bson.A
	for _, v := range vals {
		if _, isObj := v.(map[string]any); isObj {
			o := toBSON(v)
			alts = append(alts, bson.D{{Key: p, Value: bson.D{{Key: "$eq", Value: o}}}},
				bson.D{{Key: p, Value: bson.D{{Key: "$all", Value: bson.A{o}}}}})
			continue
		}
		plain = append(plain, toBSON(v))
	}
	switch {
	case len(alts) == 0 && len(plain) == 1:
		return bson.D{{Key: p, Value: bson.D{{Key: "$eq", Value: plain[0]}}}}
	case len(plain) > 0:
		alts = append(alts, bson.D{{Key: p, Value: bson.D{{Key: "$in", Value: plain}}}})
	case len(alts) == 0:
		return bson.D{{Key: p, Value: bson.D{{Key: "$in", Value: bson.A{}}}}}
	}
	return bson.D{{Key: "$or", Value: alts}}
}

// toBSON converts a normalised JSON value; object keys go in sorted order,
// the order the embedded store keeps, so object equality agrees.
func toBSON(v any) any {
	switch x := v.(type) {
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		d := make(bson.D, 0, len(x))
		for _, k := range keys {
			d = append(d, bson.E{Key: k, Value: toBSON(x[k])})
		}
		return d
	case []any:
		a := make(bson.A, 0, len(x))
		for _, e := range x {
			a = append(a, toBSON(e))
		}
		return a
	}
	return v
}

// fromBSON converts a stored value back to its JSON form.
func fromBSON(v any) any {
	switch x := v.(type) {
	case bson.D:
		m := make(map[string]any, len(x))
		for _, e := range x {
			m[e.Key] = fromBSON(e.Value)
		}
		return m
	case bson.M:
		m := make(map[string]any, len(x))
		for k, e := range x {
			m[k] = fromBSON(e)
		}
		return m
	case bson.A:
		a := make([]any, len(x))
		for i, e := range x {
			a[i] = fromBSON(e)
		}
		return a
	case int32:
		return float64(x)
	case int64:
		return float64(x)
	case float64:
		if math.IsInf(x, 0) || math.IsNaN(x) {
			return nil
		}
	}
	return v
}

// canonical is a stored document's canonical JSON.
func canonical(d bson.D) ([]byte, error) {
	return persistence.Canonical(fromBSON(d))
}

func (s *Store) dataFind(ctx context.Context, p *persistence.DataPlan) (*persistence.DataResult, error) {
	sort := bson.D{}
	byID := false
	for _, k := range p.Sort {
		dir := 1
		if k.Desc {
			dir = -1
		}
		sort = append(sort, bson.E{Key: docPath(k.Path), Value: dir})
		byID = byID || (len(k.Path) == 1 && k.Path[0] == "_id")
	}
	if !byID {
		sort = append(sort, bson.E{Key: "doc._id", Value: 1})
	}
	opts := options.Find().SetSort(sort).SetLimit(int64(p.Limit)).SetProjection(bson.D{{Key: "doc", Value: 1}})
	cur, err := s.col(colData).Find(ctx, owned(p), opts)
	if err != nil {
		return nil, err
	}
	defer cur.Close(context.WithoutCancel(ctx))
	r := p.NewResults()
	for cur.Next(ctx) {
		var d dataDoc
		if err := cur.Decode(&d); err != nil {
			return nil, err
		}
		raw, err := canonical(d.Doc)
		if err != nil {
			return nil, err
		}
		if err := r.Add(raw); err != nil {
			return nil, err
		}
	}
	if err := cur.Err(); err != nil {
		return nil, err
	}
	return r.Result(), nil
}

func (s *Store) dataCount(ctx context.Context, p *persistence.DataPlan) (*persistence.DataResult, error) {
	opts := options.Count()
	if p.Limit > 0 {
		opts.SetLimit(int64(p.Limit))
	}
	n, err := s.col(colData).CountDocuments(ctx, owned(p), opts)
	if err != nil {
		return nil, err
	}
	return &persistence.DataResult{Count: n}, nil
}

// dataWrite runs a write once per idempotency key: a recorded result is
// returned as it was; otherwise the write runs and its result is recorded.
func (s *Store) dataWrite(ctx context.Context, p *persistence.DataPlan, write func(context.Context, *persistence.DataPlan) (*persistence.DataResult, error)) (*persistence.DataResult, error) {
	if p.Key != "" {
		var rec struct {
			R string `bson:"r"`
		}
		err := s.col(colDataWrites).FindOne(ctx, bson.D{{Key: "_id", Value: dataWriteID(p.UserID, p.Key)}}).Decode(&rec)
		switch {
		case err == nil:
			return persistence.DecodeRecord([]byte(rec.R))
		case !errors.Is(err, mongo.ErrNoDocuments):
			return nil, err
		}
	}
	res, err := write(ctx, p)
	if err != nil || p.Key == "" {
		return res, err
	}
	// The write is done whether or not its record lands: failing now would
	// only make the engine retry it, and a redelivery without a record
	// falls back on ins and ops. A duplicate is a racing delivery's record.
	_, _ = s.col(colDataWrites).InsertOne(ctx, bson.D{
		{Key: "_id", Value: dataWriteID(p.UserID, p.Key)},
		{Key: "r", Value: string(persistence.EncodeRecord(res))},
		{Key: "at", Value: s.stamp(time.Time{})},
	})
	s.pruneWritten(ctx)
	return res, nil
}

// writesPruneEvery is how often, at most, a store on a server without TTL
// indexes deletes the results of writes past their retention.
const writesPruneEvery = 10 * time.Minute

// pruneWritten deletes expired results of writes where no TTL index does
// (see writesExpiry): on the first write of the store, then now and then.
func (s *Store) pruneWritten(ctx context.Context) {
	if !s.pruneWrites {
		return
	}
	now := s.now()
	last := s.lastPrune.Load()
	if last != 0 && now.Sub(time.UnixMilli(last)) < writesPruneEvery || !s.lastPrune.CompareAndSwap(last, now.UnixMilli()) {
		return
	}
	// Best effort: what is left is deleted next time.
	_, _ = s.col(colDataWrites).DeleteMany(ctx, bson.D{{Key: "at", Value: bson.D{{Key: "$lt", Value: s.stamp(now.Add(-persistence.DataWriteRetention))}}}})
}

// dataInsert inserts unordered, in batches. A duplicate _id stored under
// the same key is this insert's own document from an earlier delivery;
// any other is a conflict, reported after the rest are stored (MongoDB
// offers no transaction to undo them).
func (s *Store) dataInsert(ctx context.Context, p *persistence.DataPlan) (*persistence.DataResult, error) {
	ids := make([]string, 0, len(p.Docs))
	var dups []string
	for batch := range slices.Chunk(p.Docs, dataBatch) {
		docs := make([]any, 0, len(batch))
		for _, d := range batch {
			docs = append(docs, bson.D{
				{Key: "_id", Value: dataID(p.UserID, p.Collection, d.ID)},
				{Key: "u", Value: p.UserID}, {Key: "c", Value: p.Collection},
				{Key: "doc", Value: toBSON(d.Value)},
				{Key: "ins", Value: p.Key}, {Key: "v", Value: int64(1)},
			})
			ids = append(ids, d.ID)
		}
		_, err := s.col(colData).InsertMany(ctx, docs, options.InsertMany().SetOrdered(false))
		var bwe mongo.BulkWriteException
		switch {
		case err == nil:
		case errors.As(err, &bwe) && bwe.WriteConcernError == nil:
			for _, we := range bwe.WriteErrors {
				if !mongo.IsDuplicateKeyError(we) {
					return nil, err
				}
				dups = append(dups, batch[we.Index].ID)
			}
		default:
			return nil, err
		}
	}
	for _, id := range dups {
		var d dataDoc
		err := s.col(colData).FindOne(ctx, bson.D{{Key: "_id", Value: dataID(p.UserID, p.Collection, id)}}).Decode(&d)
		if err != nil && !errors.Is(err, mongo.ErrNoDocuments) {
			return nil, err
		}
		if p.Key == "" || d.Ins != p.Key {
			return nil, events.Errorf(persistence.CodeDataConflict, "a document with _id %q exists in %s", id, p.Collection)
		}
	}
	return &persistence.DataResult{InsertedIDs: ids}, nil
}

// dataUpdate applies the plan's update to each matching document; an
// updateOne to the least, or when another write takes that one first, to
// the next least still matching.
func (s *Store) dataUpdate(ctx context.Context, p *persistence.DataPlan) (*persistence.DataResult, error) {
	one := p.Op == persistence.OpUpdateOne
	res := &persistence.DataResult{}
	var notMine []bson.E
	if p.Key != "" {
		// Documents an earlier delivery of this write changed.
		done, err := s.col(colData).CountDocuments(ctx, bson.D{
			{Key: "u", Value: p.UserID}, {Key: "c", Value: p.Collection}, {Key: "ops", Value: p.Key},
		})
		if err != nil {
			return nil, err
		}
		if one && done > 0 {
			return &persistence.DataResult{Matched: 1, Modified: 1}, nil
		}
		res.Matched, res.Modified = done, done
		notMine = []bson.E{{Key: "ops", Value: bson.D{{Key: "$ne", Value: p.Key}}}}
	}
	byID := bson.D{{Key: "doc._id", Value: 1}}
	if one {
		for range maxAttempts {
			var d dataDoc
			err := s.col(colData).FindOne(ctx, owned(p, notMine...), options.FindOne().SetSort(byID)).Decode(&d)
			if errors.Is(err, mongo.ErrNoDocuments) {
				return res, nil
			}
			if err != nil {
				return nil, err
			}
			c, err := candidate(&d)
			if err != nil {
				return nil, err
			}
			matched, modified, err := s.updateDoc(ctx, p, c, notMine)
			if err != nil {
				return nil, err
			}
			if matched {
				res.Matched = 1
				if modified {
					res.Modified = 1
				}
				return res, nil
			}
			// Another write took it from the filter: the next one.
		}
		return nil, events.Errorf(events.CodeUnavailable, "%s: the matching documents kept changing", p.Op)
	}
	// The documents are read before any is changed, so that a request past
	// a cap changes nothing; their bytes are capped as a read's are.
	cur, err := s.col(colData).Find(ctx, owned(p, notMine...), options.Find().SetSort(byID).SetLimit(persistence.MaxWriteDocuments+1))
	if err != nil {
		return nil, err
	}
	defer cur.Close(context.WithoutCancel(ctx))
	var cands []*updateCand
	size := 0
	for cur.Next(ctx) {
		if int64(len(cands))+res.Matched >= persistence.MaxWriteDocuments {
			return nil, events.Errorf(persistence.CodeDataTooLarge, "%s matches more than %d documents; narrow the filter", p.Op, persistence.MaxWriteDocuments)
		}
		var d dataDoc
		if err := cur.Decode(&d); err != nil {
			return nil, err
		}
		c, err := candidate(&d)
		if err != nil {
			return nil, err
		}
		if size += len(c.raw); size > p.MaxResultBytes {
			return nil, events.Errorf(persistence.CodeDataTooLarge,
				"%s matches documents of more than %d bytes in all; narrow the filter", p.Op, p.MaxResultBytes)
		}
		cands = append(cands, c)
	}
	if err := cur.Err(); err != nil {
		return nil, err
	}
	_ = cur.Close(context.WithoutCancel(ctx))
	for _, c := range cands {
		matched, modified, err := s.updateDoc(ctx, p, c, notMine)
		if err != nil {
			return nil, err
		}
		if matched {
			res.Matched++
		}
		if modified {
			res.Modified++
		}
	}
	return res, nil
}

// updateCand is a document to update as read: its stored _id, version and
// canonical JSON, which is all an update needs of it.
type updateCand struct {
	id  string
	v   int64
	raw []byte
}

func candidate(d *dataDoc) (*updateCand, error) {
	raw, err := canonical(d.Doc)
	if err != nil {
		return nil, err
	}
	return &updateCand{id: d.ID, v: d.V, raw: raw}, nil
}

// updateDoc applies the update to one document, conditional on its
// version; when another update came first it reads the document again and
// retries while it still matches.
func (s *Store) updateDoc(ctx context.Context, p *persistence.DataPlan, c *updateCand, notMine []bson.E) (matched, modified bool, err error) {
	for range maxAttempts {
		out, changed, err := p.ApplyUpdate(c.raw)
		if err != nil {
			return false, false, err
		}
		if !changed {
			return true, false, nil
		}
		next, err := persistence.Normalize(jsonRaw(out))
		if err != nil {
			return false, false, err
		}
		update := bson.D{{Key: "$set", Value: bson.D{{Key: "doc", Value: toBSON(next)}, {Key: "v", Value: c.v + 1}}}}
		if p.Key != "" {
			update = append(update, bson.E{Key: "$push", Value: bson.D{{Key: "ops", Value: bson.D{
				{Key: "$each", Value: bson.A{p.Key}}, {Key: "$slice", Value: -opsKept},
			}}}})
		}
		r, err := s.col(colData).UpdateOne(ctx, bson.D{{Key: "_id", Value: c.id}, {Key: "v", Value: c.v}}, update)
		if err != nil {
			return false, false, err
		}
		if r.MatchedCount == 1 {
			return true, true, nil
		}
		// Lost the race: read it again, if it still matches.
		var d dataDoc
		err = s.col(colData).FindOne(ctx, owned(p, append([]bson.E{{Key: "_id", Value: c.id}}, notMine...)...)).Decode(&d)
		if errors.Is(err, mongo.ErrNoDocuments) {
			return false, false, nil
		}
		if err != nil {
			return false, false, err
		}
		if c, err = candidate(&d); err != nil {
			return false, false, err
		}
	}
	return false, false, events.Errorf(events.CodeUnavailable, "a document kept changing under the update")
}

// jsonRaw lets Normalize read canonical JSON as the value it encodes.
type jsonRaw []byte

func (j jsonRaw) MarshalJSON() ([]byte, error) { return j, nil }

// dataDelete deletes the least matching document, or all of them after
// checking that they are within the cap the embedded store also keeps.
func (s *Store) dataDelete(ctx context.Context, p *persistence.DataPlan) (*persistence.DataResult, error) {
	if p.Op == persistence.OpDeleteMany {
		n, err := s.col(colData).CountDocuments(ctx, owned(p), options.Count().SetLimit(persistence.MaxWriteDocuments+1))
		if err != nil {
			return nil, err
		}
		if n > persistence.MaxWriteDocuments {
			return nil, events.Errorf(persistence.CodeDataTooLarge, "%s matches more than %d documents; narrow the filter", p.Op, persistence.MaxWriteDocuments)
		}
		r, err := s.col(colData).DeleteMany(ctx, owned(p))
		if err != nil {
			return nil, err
		}
		return &persistence.DataResult{Deleted: r.DeletedCount}, nil
	}
	for range maxAttempts {
		var d dataDoc
		err := s.col(colData).FindOne(ctx, owned(p), options.FindOne().SetSort(bson.D{{Key: "doc._id", Value: 1}}).
			SetProjection(bson.D{{Key: "_id", Value: 1}})).Decode(&d)
		if errors.Is(err, mongo.ErrNoDocuments) {
			return &persistence.DataResult{}, nil
		}
		if err != nil {
			return nil, err
		}
		// The filter again: the document may have changed since.
		r, err := s.col(colData).DeleteOne(ctx, owned(p, bson.E{Key: "_id", Value: d.ID}))
		if err != nil {
			return nil, err
		}
		if r.DeletedCount == 1 {
			return &persistence.DataResult{Deleted: 1}, nil
		}
	}
	return nil, fmt.Errorf("deleteOne: the matching documents kept changing")
}
