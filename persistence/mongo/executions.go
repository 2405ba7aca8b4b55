package mongo

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/weftdev/weft/events"
	"github.com/weftdev/weft/persistence"
)

// maxWriteBatch bounds the documents of one multi-document write: FerretDB
// v1 hangs on update commands of 50 statements or more.
const maxWriteBatch = 40

// executionDoc is an execution without its nodes. Its status, output,
// error and finish time are a cache of the execution's finalDoc once that
// exists (see settle).
type executionDoc struct {
	ID              string        `bson:"_id"`
	UserID          string        `bson:"userId"`
	WorkflowID      string        `bson:"workflowId"`
	WorkflowVersion int           `bson:"workflowVersion"`
	Status          string        `bson:"status"`
	Inputs          string        `bson:"inputs"` // JSON text, kept byte for byte
	Output          *string       `bson:"output,omitempty"`
	Error           *execErrorDoc `bson:"error,omitempty"`
	IdempotencyKey  string        `bson:"idempotencyKey"`
	CreatedAt       time.Time     `bson:"createdAt"`
	StartedAt       *time.Time    `bson:"startedAt,omitempty"`
	FinishedAt      *time.Time    `bson:"finishedAt,omitempty"`
}

type execErrorDoc struct {
	NodeID  string `bson:"nodeId"`
	Code    string `bson:"code"`
	Message string `bson:"message"`
}

// keyDoc claims an idempotency key: _id "<userId>:<key>" can be inserted
// once. It carries the execution it was claimed for, so that whoever finds
// the key but not the execution (its creator stopped between the two
// inserts) can finish the create.
type keyDoc struct {
	ID          string       `bson:"_id"`
	UserID      string       `bson:"userId"`
	ExecutionID string       `bson:"executionId"`
	Execution   executionDoc `bson:"execution"`
}

// finalDoc is how an execution ended, under _id = the execution's id.
// Inserting it is what finishes an execution: only one finisher can.
type finalDoc struct {
	ID         string        `bson:"_id"`
	UserID     string        `bson:"userId"`
	WorkflowID string        `bson:"workflowId"`
	Status     string        `bson:"status"`
	Output     *string       `bson:"output,omitempty"`
	Error      *execErrorDoc `bson:"error,omitempty"`
	StartedAt  *time.Time    `bson:"startedAt,omitempty"`
	FinishedAt time.Time     `bson:"finishedAt"`
}

// nodeDoc is one node state. A node has up to two: its latest non-final
// state under "<executionId>:<nodeId>:p", replaced freely, and its final
// state under "<executionId>:<nodeId>:t", inserted once. The final one,
// when there is one, is the node's state.
type nodeDoc struct {
	ID          string        `bson:"_id"`
	ExecutionID string        `bson:"executionId"`
	NodeID      string        `bson:"nodeId"`
	Final       bool          `bson:"final"`
	Type        string        `bson:"type"`
	Status      string        `bson:"status"`
	Attempts    int           `bson:"attempts"`
	StartedAt   *time.Time    `bson:"startedAt,omitempty"`
	FinishedAt  *time.Time    `bson:"finishedAt,omitempty"`
	Output      *string       `bson:"output,omitempty"`
	Error       *nodeErrorDoc `bson:"error,omitempty"`
}

type nodeErrorDoc struct {
	Code    string `bson:"code"`
	Message string `bson:"message"`
}

// logDoc is one log line. Its ObjectID, made here, orders lines written
// at the same millisecond in the order this process appended them.
type logDoc struct {
	ID          bson.ObjectID `bson:"_id"`
	ExecutionID string        `bson:"executionId"`
	NodeID      string        `bson:"nodeId"`
	At          time.Time     `bson:"at"`
	Level       string        `bson:"level"`
	Message     string        `bson:"message"`
}

func textPtr(raw json.RawMessage) *string {
	if len(raw) == 0 {
		return nil
	}
	s := string(raw)
	return &s
}

func rawText(s *string) json.RawMessage {
	if s == nil {
		return nil
	}
	return json.RawMessage(*s)
}

// millisPtr is *t at the stored precision, in UTC.
var millisPtr = persistence.Millis

func toExecErrorDoc(e *persistence.ExecutionError) *execErrorDoc {
	if e == nil {
		return nil
	}
	return &execErrorDoc{NodeID: e.NodeID, Code: e.Code, Message: e.Message}
}

func (d *executionDoc) execution() *persistence.Execution {
	e := &persistence.Execution{
		ID: d.ID, UserID: d.UserID, WorkflowID: d.WorkflowID, WorkflowVersion: d.WorkflowVersion,
		Status: d.Status, Inputs: json.RawMessage(d.Inputs), Output: rawText(d.Output),
		IdempotencyKey: d.IdempotencyKey, CreatedAt: d.CreatedAt,
		StartedAt: d.StartedAt, FinishedAt: d.FinishedAt,
	}
	if d.Error != nil {
		e.Error = &persistence.ExecutionError{NodeID: d.Error.NodeID, Code: d.Error.Code, Message: d.Error.Message}
	}
	return e
}

// apply makes d show the end f records.
func (d *executionDoc) apply(f *finalDoc) {
	d.Status, d.Output, d.Error = f.Status, f.Output, f.Error
	at := f.FinishedAt
	d.FinishedAt = &at
	if d.StartedAt == nil {
		d.StartedAt = f.StartedAt
	}
}

// cacheFinal copies a final state onto its execution document. It only
// refreshes a cache that reads re-check (see settle), so a failure, or a
// stale replace by FerretDB undoing it, loses nothing.
func (s *Store) cacheFinal(ctx context.Context, f *finalDoc) {
	set := bson.D{
		{Key: "status", Value: f.Status},
		{Key: "finishedAt", Value: f.FinishedAt},
	}
	if f.Output != nil {
		set = append(set, bson.E{Key: "output", Value: *f.Output})
	}
	if f.Error != nil {
		set = append(set, bson.E{Key: "error", Value: f.Error})
	}
	if f.StartedAt != nil {
		set = append(set, bson.E{Key: "startedAt", Value: *f.StartedAt})
	}
	_, _ = s.col(colExecutions).UpdateOne(ctx, bson.D{{Key: "_id", Value: f.ID}}, bson.D{{Key: "$set", Value: set}})
}

// settle brings execution documents up to date with their final states:
// a document still showing queued or running may lag one that exists
// (a finisher stopped before copying it, or on FerretDB a racing start
// replaced the copy). One query finds those finals; they are applied and
// copied back. It reports which documents changed.
func (s *Store) settle(ctx context.Context, docs []executionDoc) (map[string]bool, error) {
	var open bson.A
	for i := range docs {
		if !persistence.Terminal(docs[i].Status) {
			open = append(open, docs[i].ID)
		}
	}
	if len(open) == 0 {
		return nil, nil
	}
	cur, err := s.col(colExecutionFinals).Find(ctx, bson.D{{Key: "_id", Value: bson.D{{Key: "$in", Value: open}}}})
	if err != nil {
		return nil, internal(err)
	}
	var finals []finalDoc
	if err := cur.All(ctx, &finals); err != nil {
		return nil, internal(err)
	}
	if len(finals) == 0 {
		return nil, nil
	}
	byID := make(map[string]*finalDoc, len(finals))
	for i := range finals {
		byID[finals[i].ID] = &finals[i]
	}
	changed := make(map[string]bool, len(finals))
	for i := range docs {
		if f := byID[docs[i].ID]; f != nil {
			docs[i].apply(f)
			s.cacheFinal(ctx, f)
			changed[f.ID] = true
		}
	}
	return changed, nil
}

// CreateExecution stores e unless its id, or its user's idempotency key,
// is taken. Both are claimed by unique inserts, the only atomic step
// FerretDB v1 offers: first the key (a keyDoc), then the execution (its
// _id). Of racing creates with one key exactly one claims it and reports
// created; the others return the execution the key names, inserting it
// from the keyDoc themselves when its creator has not (yet) done so. An id
// taken by another user's execution is a conflict.
func (s *Store) CreateExecution(ctx context.Context, e *persistence.Execution) (*persistence.Execution, bool, error) {
	ne, err := persistence.NormalizeExecution(e, s.stamp(e.CreatedAt))
	if err != nil {
		return nil, false, err
	}
	doc := executionDoc{
		ID: ne.ID, UserID: ne.UserID, WorkflowID: ne.WorkflowID, WorkflowVersion: ne.WorkflowVersion,
		Status: ne.Status, Inputs: string(ne.Inputs), Output: textPtr(ne.Output), Error: toExecErrorDoc(ne.Error),
		IdempotencyKey: ne.IdempotencyKey, CreatedAt: ne.CreatedAt, StartedAt: ne.StartedAt, FinishedAt: ne.FinishedAt,
	}

	wonKey := false
	keyID := ne.UserID + ":" + ne.IdempotencyKey
	if ne.IdempotencyKey != "" {
		_, err := s.col(colExecutionKeys).InsertOne(ctx, keyDoc{ID: keyID, UserID: ne.UserID, ExecutionID: ne.ID, Execution: doc})
		switch {
		case err == nil:
			wonKey = true
		case mongo.IsDuplicateKeyError(err):
			var k keyDoc
			if err := s.col(colExecutionKeys).FindOne(ctx, bson.D{{Key: "_id", Value: keyID}}).Decode(&k); err != nil {
				return nil, false, internal(err)
			}
			if k.ExecutionID != ne.ID {
				// Finish the create that claimed the key, should it
				// have stopped before inserting its execution.
				if _, err := s.col(colExecutions).InsertOne(ctx, k.Execution); err != nil && !mongo.IsDuplicateKeyError(err) {
					return nil, false, internal(err)
				}
				stored, err := s.loadExecution(ctx, bson.D{{Key: "_id", Value: k.ExecutionID}}, true)
				if err != nil {
					return nil, false, err
				}
				return stored, false, nil
			}
			// Our own earlier attempt claimed it: carry on.
		default:
			return nil, false, internal(err)
		}
	}

	_, err = s.col(colExecutions).InsertOne(ctx, doc)
	if err == nil {
		if err := s.writeNodes(ctx, ne.ID, ne.Nodes); err != nil {
			return nil, false, err
		}
		if persistence.Terminal(ne.Status) && ne.FinishedAt != nil {
			// Born finished: record the end, as Finish would have.
			f := finalDoc{ID: ne.ID, UserID: ne.UserID, WorkflowID: ne.WorkflowID, Status: ne.Status,
				Output: doc.Output, Error: doc.Error, StartedAt: ne.StartedAt, FinishedAt: *ne.FinishedAt}
			if _, err := s.col(colExecutionFinals).InsertOne(ctx, f); err != nil && !mongo.IsDuplicateKeyError(err) {
				return nil, false, internal(err)
			}
		}
		return ne, true, nil
	}
	if !mongo.IsDuplicateKeyError(err) {
		return nil, false, internal(err)
	}
	stored, err := s.loadExecution(ctx, bson.D{{Key: "_id", Value: ne.ID}}, true)
	if err != nil {
		return nil, false, err
	}
	if stored.UserID != ne.UserID {
		if wonKey {
			// The key must not keep naming another user's execution.
			_, _ = s.col(colExecutionKeys).DeleteOne(ctx, bson.D{{Key: "_id", Value: keyID}})
		}
		return nil, false, events.Errorf(events.CodeConflict, "execution already exists")
	}
	// When we claimed the key and a racing caller inserted the execution
	// from our keyDoc, the create is still ours.
	created := wonKey && ne.IdempotencyKey != "" && stored.IdempotencyKey == ne.IdempotencyKey
	return stored, created, nil
}

// GetExecution returns one of the user's executions with its nodes.
func (s *Store) GetExecution(ctx context.Context, userID, id string) (*persistence.Execution, error) {
	return s.loadExecution(ctx, bson.D{{Key: "_id", Value: id}, {Key: "userId", Value: userID}}, true)
}

// LoadExecution returns an execution by id alone, with its nodes.
func (s *Store) LoadExecution(ctx context.Context, id string) (*persistence.Execution, error) {
	return s.loadExecution(ctx, bson.D{{Key: "_id", Value: id}}, true)
}

// loadExecution reads an execution, settles it, and reads its nodes after
// that, so a finished execution always comes with the nodes that led to
// its end.
func (s *Store) loadExecution(ctx context.Context, filter bson.D, nodes bool) (*persistence.Execution, error) {
	var d executionDoc
	if err := s.col(colExecutions).FindOne(ctx, filter).Decode(&d); err != nil {
		return nil, findErr(err, "execution")
	}
	docs := []executionDoc{d}
	if _, err := s.settle(ctx, docs); err != nil {
		return nil, err
	}
	e := docs[0].execution()
	if !nodes {
		return e, nil
	}
	cur, err := s.col(colExecutionNodes).Find(ctx, bson.D{{Key: "executionId", Value: d.ID}})
	if err != nil {
		return nil, internal(err)
	}
	var nds []nodeDoc
	if err := cur.All(ctx, &nds); err != nil {
		return nil, internal(err)
	}
	e.Nodes = make(map[string]*persistence.NodeState, len(nds))
	progress := make(map[string]*nodeDoc, len(nds))
	for i := range nds {
		if n := &nds[i]; !n.Final {
			progress[n.NodeID] = n
		}
	}
	// Final states first; a progress document only for nodes without one.
	for _, final := range []bool{true, false} {
		for i := range nds {
			n := &nds[i]
			if n.Final != final || e.Nodes[n.NodeID] != nil {
				continue
			}
			st := &persistence.NodeState{Type: n.Type, Status: n.Status, Attempts: n.Attempts,
				StartedAt: n.StartedAt, FinishedAt: n.FinishedAt, Output: rawText(n.Output)}
			if n.Error != nil {
				st.Error = &persistence.NodeError{Code: n.Error.Code, Message: n.Error.Message}
			}
			if p := progress[n.NodeID]; final && st.StartedAt == nil && p != nil {
				// A final write without a start time keeps the one the
				// running state had, as the SQLite store does.
				st.StartedAt = p.StartedAt
			}
			e.Nodes[n.NodeID] = st
		}
	}
	return e, nil
}

// writeNodes writes node states: final ones by insert (a taken _id means
// an earlier final write won, and this one is dropped), non-final ones by
// replacing the node's progress document. Each kind goes in batches of at
// most maxWriteBatch, unordered.
func (s *Store) writeNodes(ctx context.Context, executionID string, nodes map[string]*persistence.NodeState) error {
	var finals []any
	var progress []mongo.WriteModel
	for id, n := range nodes {
		d := nodeDoc{ExecutionID: executionID, NodeID: id, Final: persistence.Terminal(n.Status),
			Type: n.Type, Status: n.Status, Attempts: n.Attempts,
			StartedAt: millisPtr(n.StartedAt), FinishedAt: millisPtr(n.FinishedAt), Output: textPtr(n.Output)}
		if n.Error != nil {
			d.Error = &nodeErrorDoc{Code: n.Error.Code, Message: n.Error.Message}
		}
		if d.Final {
			d.ID = executionID + ":" + id + ":t"
			finals = append(finals, d)
		} else {
			d.ID = executionID + ":" + id + ":p"
			progress = append(progress, mongo.NewReplaceOneModel().
				SetFilter(bson.D{{Key: "_id", Value: d.ID}}).SetReplacement(d).SetUpsert(true))
		}
	}
	for start := 0; start < len(progress); start += maxWriteBatch {
		batch := progress[start:min(start+maxWriteBatch, len(progress))]
		opts := options.BulkWrite().SetOrdered(false)
		_, err := s.col(colExecutionNodes).BulkWrite(ctx, batch, opts)
		if mongo.IsDuplicateKeyError(err) {
			// Two upserts of one new document raced and both tried to
			// insert; now it exists, so the retry replaces it.
			_, err = s.col(colExecutionNodes).BulkWrite(ctx, batch, opts)
		}
		if err != nil {
			return internal(err)
		}
	}
	for start := 0; start < len(finals); start += maxWriteBatch {
		batch := finals[start:min(start+maxWriteBatch, len(finals))]
		_, err := s.col(colExecutionNodes).InsertMany(ctx, batch, options.InsertMany().SetOrdered(false))
		if err != nil && !onlyDuplicates(err) {
			return internal(err)
		}
	}
	return nil
}

// onlyDuplicates reports whether every failed write of a bulk insert
// failed on a taken _id.
func onlyDuplicates(err error) bool {
	var bwe mongo.BulkWriteException
	if errors.As(err, &bwe) {
		if bwe.WriteConcernError != nil || len(bwe.WriteErrors) == 0 {
			return false
		}
		for _, we := range bwe.WriteErrors {
			if !mongo.IsDuplicateKeyError(we) {
				return false
			}
		}
		return true
	}
	return mongo.IsDuplicateKeyError(err)
}

// ApplyExecution applies one engine step in a safe order, without
// transactions: start, nodes, logs, and the finish last, so an execution
// seen finished has its nodes recorded. Each part is idempotent, so a
// caller that fails halfway retries the whole update. The finish is the
// insert of the execution's finalDoc: of racing finishers exactly one
// inserts it, and only that one reports Finished.
func (s *Store) ApplyExecution(ctx context.Context, u persistence.ExecutionUpdate) (persistence.ApplyResult, error) {
	for id, n := range u.Nodes {
		if err := persistence.ValidNode(id, n); err != nil {
			return persistence.ApplyResult{}, err
		}
	}
	if u.Finish != nil && !finishStatus(u.Finish.Status) {
		return persistence.ApplyResult{}, events.Errorf(events.CodeInvalid, "cannot finish an execution as %q", u.Finish.Status)
	}
	if u.Create != nil && u.Create.ID != u.ID {
		return persistence.ApplyResult{}, events.Errorf(events.CodeInvalid, "the execution to create is not the one updated")
	}
	var d executionDoc
	find := func() error {
		return s.col(colExecutions).FindOne(ctx, bson.D{{Key: "_id", Value: u.ID}},
			options.FindOne().SetProjection(bson.D{{Key: "inputs", Value: 0}, {Key: "output", Value: 0}})).Decode(&d)
	}
	err := find()
	if errors.Is(err, mongo.ErrNoDocuments) && u.Create != nil {
		// Mostly the record is there already: looked for first.
		if _, _, err := s.CreateExecution(ctx, u.Create); err != nil {
			return persistence.ApplyResult{}, err
		}
		err = find()
	}
	if err != nil {
		return persistence.ApplyResult{}, findErr(err, "execution")
	}

	if persistence.Terminal(d.Status) {
		// Ended, as far as the cached status tells (see cacheFinal): the
		// record is final.
		res := persistence.ApplyResult{Ended: true}
		if u.Reload {
			e, err := s.loadExecution(ctx, bson.D{{Key: "_id", Value: u.ID}}, true)
			if err != nil {
				return persistence.ApplyResult{}, err
			}
			res.Execution = e
		}
		return res, nil
	}
	if u.Start != nil && d.Status == persistence.StatusQueued {
		at := s.stamp(*u.Start)
		_, err := s.col(colExecutions).UpdateOne(ctx,
			bson.D{{Key: "_id", Value: u.ID}, {Key: "status", Value: persistence.StatusQueued}},
			bson.D{{Key: "$set", Value: bson.D{{Key: "status", Value: persistence.StatusRunning}, {Key: "startedAt", Value: at}}}})
		if err != nil {
			return persistence.ApplyResult{}, internal(err)
		}
		d.StartedAt = &at
	}
	if err := s.writeNodes(ctx, u.ID, u.Nodes); err != nil {
		return persistence.ApplyResult{}, err
	}
	if err := s.appendLogs(ctx, u.ID, u.Logs); err != nil {
		return persistence.ApplyResult{}, err
	}

	var res persistence.ApplyResult
	// A cached terminal status is never wrong (it is only ever copied from
	// a finalDoc), so it spares the insert.
	if f := u.Finish; f != nil && !persistence.Terminal(d.Status) {
		final := finalDoc{ID: u.ID, UserID: d.UserID, WorkflowID: d.WorkflowID, Status: f.Status,
			Output: textPtr(f.Output), Error: toExecErrorDoc(f.Error), StartedAt: d.StartedAt, FinishedAt: s.stamp(f.At)}
		_, err := s.col(colExecutionFinals).InsertOne(ctx, final)
		switch {
		case err == nil:
			res.Finished = true
			s.cacheFinal(ctx, &final)
		case !mongo.IsDuplicateKeyError(err):
			return persistence.ApplyResult{}, internal(err)
		}
	}
	if u.Reload {
		e, err := s.loadExecution(ctx, bson.D{{Key: "_id", Value: u.ID}}, true)
		if err != nil {
			return persistence.ApplyResult{}, err
		}
		res.Execution = e
	}
	return res, nil
}

func (s *Store) appendLogs(ctx context.Context, executionID string, logs []persistence.NodeLog) error {
	docs := make([]any, len(logs))
	for i, l := range logs {
		docs[i] = logDoc{ID: bson.NewObjectID(), ExecutionID: executionID, NodeID: l.NodeID,
			At: s.stamp(l.At), Level: l.Level, Message: l.Message}
	}
	for start := 0; start < len(docs); start += maxWriteBatch {
		if _, err := s.col(colExecutionLogs).InsertMany(ctx, docs[start:min(start+maxWriteBatch, len(docs))]); err != nil {
			return internal(err)
		}
	}
	return nil
}

// finishStatus reports whether an execution may end in status.
func finishStatus(status string) bool {
	switch status {
	case persistence.StatusCompleted, persistence.StatusFailed, persistence.StatusCancelled:
		return true
	}
	return false
}

// ListExecutions pages through the user's executions by id, newest first.
// A final status is listed from the finals, which are exact; any other
// listing reads the execution documents and settles the page, dropping
// those that settling shows no longer match (the page is then shorter, the
// cursor still right).
func (s *Store) ListExecutions(ctx context.Context, userID string, f persistence.ExecutionFilter, p persistence.Page) ([]persistence.Execution, string, error) {
	limit := persistence.PageLimit(p.Limit)
	filter := bson.D{{Key: "userId", Value: userID}}
	if f.WorkflowID != "" {
		filter = append(filter, bson.E{Key: "workflowId", Value: f.WorkflowID})
	}
	if f.Status != "" {
		filter = append(filter, bson.E{Key: "status", Value: f.Status})
	}
	if p.Cursor != "" {
		filter = append(filter, bson.E{Key: "_id", Value: bson.D{{Key: "$lt", Value: p.Cursor}}})
	}
	page := options.Find().SetSort(bson.D{{Key: "_id", Value: -1}}).SetLimit(int64(limit + 1))
	if f.Status != "" && persistence.Terminal(f.Status) {
		return s.listFinished(ctx, filter, page, limit)
	}

	docs, next, err := findPage(ctx, s.col(colExecutions), filter, page, limit, func(d *executionDoc) string { return d.ID })
	if err != nil {
		return nil, "", err
	}
	if _, err := s.settle(ctx, docs); err != nil {
		return nil, "", err
	}
	list := make([]persistence.Execution, 0, len(docs))
	for i := range docs {
		if f.Status != "" && docs[i].Status != f.Status {
			continue
		}
		list = append(list, *docs[i].execution())
	}
	return list, next, nil
}

// listFinished lists executions in a final status through their finals.
func (s *Store) listFinished(ctx context.Context, filter bson.D, page *options.FindOptionsBuilder, limit int) ([]persistence.Execution, string, error) {
	finals, next, err := findPage(ctx, s.col(colExecutionFinals), filter, page, limit, func(d *finalDoc) string { return d.ID })
	if err != nil {
		return nil, "", err
	}
	if len(finals) == 0 {
		return []persistence.Execution{}, next, nil
	}
	ids := make(bson.A, len(finals))
	for i := range finals {
		ids[i] = finals[i].ID
	}
	cur, err := s.col(colExecutions).Find(ctx, bson.D{{Key: "_id", Value: bson.D{{Key: "$in", Value: ids}}}})
	if err != nil {
		return nil, "", internal(err)
	}
	var docs []executionDoc
	if err := cur.All(ctx, &docs); err != nil {
		return nil, "", internal(err)
	}
	byID := make(map[string]*executionDoc, len(docs))
	for i := range docs {
		byID[docs[i].ID] = &docs[i]
	}
	list := make([]persistence.Execution, 0, len(finals))
	for i := range finals {
		d := byID[finals[i].ID]
		if d == nil {
			continue // a final is written only after its execution: cannot happen
		}
		if !persistence.Terminal(d.Status) {
			d.apply(&finals[i])
			s.cacheFinal(ctx, &finals[i])
		}
		list = append(list, *d.execution())
	}
	return list, next, nil
}

// UnfinishedExecutions lists executions still queued or running created
// before the given time, oldest first, dropping those that settling shows
// finished (and repairing them, so the next call does not meet them).
func (s *Store) UnfinishedExecutions(ctx context.Context, before time.Time, limit int) ([]persistence.Execution, error) {
	cur, err := s.col(colExecutions).Find(ctx, bson.D{
		{Key: "status", Value: bson.D{{Key: "$in", Value: bson.A{persistence.StatusQueued, persistence.StatusRunning}}}},
		{Key: "createdAt", Value: bson.D{{Key: "$lt", Value: before}}},
	}, options.Find().SetSort(bson.D{{Key: "createdAt", Value: 1}, {Key: "_id", Value: 1}}).SetLimit(int64(persistence.WorkLimit(limit))))
	if err != nil {
		return nil, internal(err)
	}
	var docs []executionDoc
	if err := cur.All(ctx, &docs); err != nil {
		return nil, internal(err)
	}
	finished, err := s.settle(ctx, docs)
	if err != nil {
		return nil, err
	}
	list := make([]persistence.Execution, 0, len(docs))
	for i := range docs {
		if !finished[docs[i].ID] {
			list = append(list, *docs[i].execution())
		}
	}
	return list, nil
}

// ExecutionLogs returns the logs of one of the user's executions, oldest
// first (by time, then in the order they were appended).
func (s *Store) ExecutionLogs(ctx context.Context, userID, id string, limit int) ([]persistence.NodeLog, error) {
	err := s.col(colExecutions).FindOne(ctx, bson.D{{Key: "_id", Value: id}, {Key: "userId", Value: userID}},
		options.FindOne().SetProjection(bson.D{{Key: "_id", Value: 1}})).Err()
	if err != nil {
		return nil, findErr(err, "execution")
	}
	cur, err := s.col(colExecutionLogs).Find(ctx, bson.D{{Key: "executionId", Value: id}},
		options.Find().SetSort(bson.D{{Key: "at", Value: 1}, {Key: "_id", Value: 1}}).SetLimit(int64(persistence.WorkLimit(limit))))
	if err != nil {
		return nil, internal(err)
	}
	var docs []logDoc
	if err := cur.All(ctx, &docs); err != nil {
		return nil, internal(err)
	}
	logs := make([]persistence.NodeLog, len(docs))
	for i, d := range docs {
		logs[i] = persistence.NodeLog{NodeID: d.NodeID, At: d.At, Level: d.Level, Message: d.Message}
	}
	return logs, nil
}
