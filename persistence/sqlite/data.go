package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"strings"
	"sync/atomic"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/weftdev/weft/events"
	"github.com/weftdev/weft/persistence"
)

// The data space of the DATABASE node (see persistence/data.go for the
// semantics and data_sql.go for the filter compiler).
//
// Reads run on the reader pool under the caller's context, so a deadline
// interrupts them. A write runs in two phases: the reader pool finds the
// ids of the matching documents (under the deadline, and bounded by
// persistence.MaxWriteDocuments), then one writer transaction re-checks the
// filter on exactly those rows by primary key, applies the change and
// records the result under the idempotency key. The writer never scans a
// collection, so one slow filter cannot hold up every other write; a
// document changed between the phases so that it no longer matches is left
// alone, as if the write had come first.

var _ persistence.DataStore = (*Store)(nil)

// pruneEvery makes one write in so many prune old results.
const pruneEvery = 64

var pruneTick atomic.Int64

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
		res, err = s.dataInsert(ctx, p)
	default:
		res, err = s.dataChange(ctx, p)
	}
	if err != nil {
		return nil, dataErr(ctx, err)
	}
	return res, nil
}

// dataErr reports a deadline as db_timeout; a cancel stays the context's
// error, which the node reports as cancelled. A statement SQLite refuses
// for its size is db_invalid: running it again cannot help.
func dataErr(ctx context.Context, err error) error {
	switch {
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		return &events.Error{Code: persistence.CodeDataTimeout, Message: "the operation ran past its time limit", Err: err}
	case ctx.Err() != nil:
		return ctx.Err()
	case tooBig(err):
		return &events.Error{Code: persistence.CodeDataInvalid, Message: "the request is too large for the store to run; make the filter smaller", Err: err}
	case !isCoded(err):
		return internal(err)
	}
	return err
}

// tooBig reports whether SQLite refused a statement for passing one of its
// limits: expression depth, host parameters, terms, length.
func tooBig(err error) bool {
	var se *sqlite.Error
	if !errors.As(err, &se) {
		return false
	}
	if se.Code() == sqlite3.SQLITE_TOOBIG {
		return true
	}
	msg := se.Error()
	return se.Code() == sqlite3.SQLITE_ERROR && (strings.Contains(msg, "too large") ||
		strings.Contains(msg, "too many") || strings.Contains(msg, "stack overflow"))
}

func isCoded(err error) bool {
	var e *events.Error
	return errors.As(err, &e)
}

// where writes the row filter: the owner and collection, then the user's
// filter.
func where(q *sqlb, p *persistence.DataPlan) {
	q.sql(" FROM data_documents d WHERE d.user_id = ").arg(p.UserID).
		sql(" AND d.collection = ").arg(p.Collection)
	if p.Filter != nil {
		q.sql(" AND ")
		q.cond(p.Filter)
	}
}

func (s *Store) dataFind(ctx context.Context, p *persistence.DataPlan) (*persistence.DataResult, error) {
	q := &sqlb{}
	q.sql("SELECT d.doc")
	where(q, p)
	if len(p.Sort) > 0 {
		q.orderBy(p.Sort)
	} else {
		q.sql(" ORDER BY d.id")
	}
	q.sql(" LIMIT ").arg(p.Limit)
	rows, err := s.read.QueryContext(ctx, q.b.String(), q.args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	r := p.NewResults()
	for rows.Next() {
		var doc string
		if err := rows.Scan(&doc); err != nil {
			return nil, err
		}
		if err := r.Add([]byte(doc)); err != nil {
			return nil, err
		}
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	return r.Result(), nil
}

func (s *Store) dataCount(ctx context.Context, p *persistence.DataPlan) (*persistence.DataResult, error) {
	q := &sqlb{}
	q.sql("SELECT count(*) FROM (SELECT 1")
	where(q, p)
	limit := p.Limit
	if limit == 0 {
		limit = -1 // SQLite: no limit
	}
	q.sql(" LIMIT ").arg(limit).sql(")")
	var n int64
	if err := s.read.QueryRowContext(ctx, q.b.String(), q.args...).Scan(&n); err != nil {
		return nil, err
	}
	return &persistence.DataResult{Count: n}, nil
}

// dataInsert stores the plan's documents in one transaction. A document
// whose _id exists is a no-op when the same idempotency key stored it (a
// redelivery) and a conflict otherwise; nothing is stored then.
func (s *Store) dataInsert(ctx context.Context, p *persistence.DataPlan) (*persistence.DataResult, error) {
	var res *persistence.DataResult
	err := s.do(ctx, func(t *wtx) error {
		res = nil
		if rec, err := t.recorded(p); err != nil || rec != nil {
			res = rec
			return err
		}
		ids := make([]string, 0, len(p.Docs))
		for _, d := range p.Docs {
			r, err := t.exec(`INSERT INTO data_documents (user_id, collection, id, doc, insert_key)
				VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`,
				p.UserID, p.Collection, d.ID, string(d.JSON), p.Key)
			if err != nil {
				return internal(err)
			}
			if n, err := r.RowsAffected(); err != nil {
				return internal(err)
			} else if n == 0 {
				var key string
				err := t.queryRow(`SELECT insert_key FROM data_documents WHERE user_id = ? AND collection = ? AND id = ?`,
					p.UserID, p.Collection, d.ID).Scan(&key)
				if err != nil {
					return internal(err)
				}
				if p.Key == "" || key != p.Key {
					return events.Errorf(persistence.CodeDataConflict, "a document with _id %q exists in %s", d.ID, p.Collection)
				}
			}
			ids = append(ids, d.ID)
		}
		res = &persistence.DataResult{InsertedIDs: ids}
		return t.record(p, res)
	})
	return res, err
}

// maxChangeAttempts bounds how often a one-document write looks for
// another candidate after losing its own to a concurrent write. Each loss
// is another write's progress, so this is reached only under a storm.
const maxChangeAttempts = 32

// oneCandidates is how many candidates a one-document write takes to the
// writer: it acts on the least of them that still matches, so a few
// concurrent writes on one filter need not come back for more.
const oneCandidates = 8

// dataChange runs an update or a delete in two phases (see the top of this
// file). A one-document write whose candidates all stopped matching between
// the phases records nothing and looks again: recording "matched nothing"
// would answer every retry with it while matching documents remain.
func (s *Store) dataChange(ctx context.Context, p *persistence.DataPlan) (*persistence.DataResult, error) {
	one := p.Op == persistence.OpUpdateOne || p.Op == persistence.OpDeleteOne
	for range maxChangeAttempts {
		if rec, err := s.readRecorded(ctx, p); err != nil || rec != nil {
			return rec, err
		}
		ids, err := s.candidates(ctx, p, one)
		if err != nil {
			return nil, err
		}
		var res *persistence.DataResult
		err = s.do(ctx, func(t *wtx) error {
			res = nil
			if rec, err := t.recorded(p); err != nil || rec != nil {
				res = rec
				return err
			}
			r, err := t.change(p, ids)
			if err != nil {
				return err
			}
			if one && len(ids) > 0 && r.Matched+r.Deleted == 0 {
				return nil // lost the race: nothing written, nothing recorded
			}
			res = r
			return t.record(p, res)
		})
		if err != nil {
			return nil, err
		}
		if res != nil {
			return res, nil
		}
	}
	return nil, events.Errorf(events.CodeUnavailable, "%s: the matching documents kept changing", p.Op)
}

// candidates lists the ids of the documents the write targets, least
// first: one for a one-document write, all (up to the cap) otherwise.
func (s *Store) candidates(ctx context.Context, p *persistence.DataPlan, one bool) ([]string, error) {
	limit := persistence.MaxWriteDocuments + 1
	if one {
		limit = oneCandidates
	}
	q := &sqlb{}
	q.sql("SELECT d.id")
	where(q, p)
	q.sql(" ORDER BY d.id LIMIT ").arg(limit)
	rows, err := s.read.QueryContext(ctx, q.b.String(), q.args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		ids = append(ids, id)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if len(ids) > persistence.MaxWriteDocuments {
		return nil, events.Errorf(persistence.CodeDataTooLarge, "%s matches more than %d documents; narrow the filter", p.Op, persistence.MaxWriteDocuments)
	}
	return ids, nil
}

// change applies the write to those of ids that still match, in the
// writer's transaction; a one-document write to the least of them. An
// updateMany holds the documents it changes at once, so their bytes are
// capped as a read's are (MaxResultBytes), checked before anything is
// written.
func (t *wtx) change(p *persistence.DataPlan, ids []string) (*persistence.DataResult, error) {
	if len(ids) == 0 {
		return &persistence.DataResult{}, nil
	}
	one := p.Op == persistence.OpUpdateOne || p.Op == persistence.OpDeleteOne
	list, _ := json.Marshal(ids)
	q := &sqlb{}
	if p.Op == persistence.OpDeleteOne || p.Op == persistence.OpDeleteMany {
		q.sql("DELETE FROM data_documents AS d WHERE d.user_id = ").arg(p.UserID).
			sql(" AND d.collection = ").arg(p.Collection).
			sql(" AND d.id IN (SELECT d.id")
		where(q, p)
		q.sql(" AND d.id IN (SELECT value FROM json_each(").arg(string(list)).sql(")) ORDER BY d.id")
		if one {
			q.sql(" LIMIT 1")
		}
		q.sql(")")
		// Filters vary with every workflow: run them unprepared rather than
		// grow the writer's statement cache without bound.
		r, err := t.w.conn.ExecContext(context.Background(), q.b.String(), q.args...)
		if err != nil {
			return nil, internal(err)
		}
		n, err := r.RowsAffected()
		if err != nil {
			return nil, internal(err)
		}
		return &persistence.DataResult{Deleted: n}, nil
	}
	q.sql("SELECT d.id, d.doc")
	where(q, p)
	q.sql(" AND d.id IN (SELECT value FROM json_each(").arg(string(list)).sql(")) ORDER BY d.id")
	if one {
		q.sql(" LIMIT 1")
	}
	rows, err := t.w.conn.QueryContext(context.Background(), q.b.String(), q.args...)
	if err != nil {
		return nil, internal(err)
	}
	type row struct{ id, doc string }
	var matched []row
	size := 0
	for rows.Next() {
		var r row
		if err := rows.Scan(&r.id, &r.doc); err != nil {
			_ = rows.Close()
			return nil, internal(err)
		}
		if size += len(r.doc); size > p.MaxResultBytes && !one {
			_ = rows.Close()
			return nil, events.Errorf(persistence.CodeDataTooLarge,
				"%s matches documents of more than %d bytes in all; narrow the filter", p.Op, p.MaxResultBytes)
		}
		matched = append(matched, r)
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		return nil, internal(err)
	}
	res := &persistence.DataResult{Matched: int64(len(matched))}
	for _, r := range matched {
		out, changed, err := p.ApplyUpdate([]byte(r.doc))
		if err != nil {
			return nil, err
		}
		if !changed {
			continue
		}
		if _, err := t.exec(`UPDATE data_documents SET doc = ? WHERE user_id = ? AND collection = ? AND id = ?`,
			string(out), p.UserID, p.Collection, r.id); err != nil {
			return nil, internal(err)
		}
		res.Modified++
	}
	return res, nil
}

// recorded returns the result of a write already applied under the plan's
// key, or nil.
func (t *wtx) recorded(p *persistence.DataPlan) (*persistence.DataResult, error) {
	if p.Key == "" {
		return nil, nil
	}
	var raw string
	err := t.queryRow(`SELECT result FROM data_writes WHERE user_id = ? AND op_key = ?`, p.UserID, p.Key).Scan(&raw)
	return decodeRecorded(raw, err)
}

// readRecorded is recorded on the reader pool, so a redelivery returns
// without queueing for the writer.
func (s *Store) readRecorded(ctx context.Context, p *persistence.DataPlan) (*persistence.DataResult, error) {
	if p.Key == "" {
		return nil, nil
	}
	var raw string
	err := s.read.QueryRowContext(ctx, `SELECT result FROM data_writes WHERE user_id = ? AND op_key = ?`, p.UserID, p.Key).Scan(&raw)
	return decodeRecorded(raw, err)
}

func decodeRecorded(raw string, err error) (*persistence.DataResult, error) {
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, internal(err)
	}
	res, err := persistence.DecodeRecord([]byte(raw))
	if err != nil {
		return nil, internal(err)
	}
	return res, nil
}

// record keeps the result of a write under its key, in the write's
// transaction, and now and then prunes results past their retention.
func (t *wtx) record(p *persistence.DataPlan, res *persistence.DataResult) error {
	if p.Key == "" {
		return nil
	}
	now := time.Now()
	if _, err := t.exec(`INSERT INTO data_writes (user_id, op_key, result, at) VALUES (?, ?, ?, ?)`,
		p.UserID, p.Key, string(persistence.EncodeRecord(res)), toMillis(now)); err != nil {
		return internal(err)
	}
	if pruneTick.Add(1)%pruneEvery == 0 {
		if _, err := t.exec(`DELETE FROM data_writes WHERE rowid IN
			(SELECT rowid FROM data_writes WHERE at < ? ORDER BY at LIMIT 256)`,
			toMillis(now.Add(-persistence.DataWriteRetention))); err != nil {
			return internal(err)
		}
	}
	return nil
}
