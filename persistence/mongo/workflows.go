package mongo

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/weftdev/weft/events"
	"github.com/weftdev/weft/persistence"
)

// maxAttempts bounds how often one update retries after losing the race
// for a version number; each loss means another update landed, so this is
// only reached under sustained contention.
const maxAttempts = 32

// maxRollForward bounds how many versions a read replays onto a stale head
// before giving up; a head is at most a few versions behind.
const maxRollForward = 64

// versionDoc is one entry of a workflow's append-only history: a version,
// or, with Deleted set, the tombstone that ends it. Entries are never
// changed once inserted.
type versionDoc struct {
	ID          string    `bson:"_id"` // versionID(WorkflowID, Version)
	WorkflowID  string    `bson:"workflowId"`
	UserID      string    `bson:"userId"`
	Version     int       `bson:"version"`
	Name        string    `bson:"name"`
	Description string    `bson:"description"`
	Definition  string    `bson:"definition"` // JSON text, kept byte for byte
	CreatedAt   time.Time `bson:"createdAt"`  // when version 1 was saved
	UpdatedAt   time.Time `bson:"updatedAt"`  // when this entry was saved
	Deleted     bool      `bson:"deleted"`
}

// workflowDoc is the head of a workflow: a copy of its newest history entry
// for lookups and listings. It is a cache the history can always rebuild,
// and it may lag behind it (see head).
type workflowDoc struct {
	ID          string    `bson:"_id"`
	UserID      string    `bson:"userId"`
	Version     int       `bson:"version"`
	Name        string    `bson:"name"`
	Description string    `bson:"description"`
	Definition  string    `bson:"definition"`
	CreatedAt   time.Time `bson:"createdAt"`
	UpdatedAt   time.Time `bson:"updatedAt"`
	Deleted     bool      `bson:"deleted"`
}

func versionID(workflowID string, version int) string {
	return workflowID + ":" + strconv.Itoa(version)
}

func (d *workflowDoc) workflow() *persistence.Workflow {
	return &persistence.Workflow{
		ID: d.ID, UserID: d.UserID, Name: d.Name, Description: d.Description,
		Version: d.Version, Definition: json.RawMessage(d.Definition),
		CreatedAt: d.CreatedAt, UpdatedAt: d.UpdatedAt,
	}
}

// apply makes d the head that entry v describes.
func (d *workflowDoc) apply(v *versionDoc) {
	d.Version, d.Name, d.Description, d.Definition = v.Version, v.Name, v.Description, v.Definition
	d.UpdatedAt, d.Deleted = v.UpdatedAt, v.Deleted
}

// CreateWorkflow stores w as version 1: the history entry first, then the
// head, so a head never names a version that does not exist.
func (s *Store) CreateWorkflow(ctx context.Context, w *persistence.Workflow) error {
	w.Version = 1
	w.CreatedAt = s.stamp(w.CreatedAt)
	w.UpdatedAt = w.CreatedAt
	v := versionDoc{
		ID: versionID(w.ID, 1), WorkflowID: w.ID, UserID: w.UserID, Version: 1,
		Name: w.Name, Description: w.Description, Definition: string(w.Definition),
		CreatedAt: w.CreatedAt, UpdatedAt: w.UpdatedAt,
	}
	if _, err := s.col(colWorkflowVersions).InsertOne(ctx, v); err != nil {
		return insertErr(err, "workflow")
	}
	head := workflowDoc{ID: w.ID, UserID: w.UserID, CreatedAt: w.CreatedAt}
	head.apply(&v)
	if _, err := s.col(colWorkflows).InsertOne(ctx, head); err != nil {
		return insertErr(err, "workflow")
	}
	return nil
}

// head returns the up-to-date head of the user's workflow, deleted or not.
//
// The stored head can lag: an update that crashed after appending its entry
// never moved it, and on FerretDB v1 (where an update is a read then a
// whole-document replace) a slow writer can even put back an older entry.
// So head checks whether the next entry exists, and if it does rolls the
// stored head forward (helping whoever appended it) until none follows.
// That one extra lookup by _id makes reads exact on both servers.
func (s *Store) head(ctx context.Context, userID, id string) (*workflowDoc, error) {
	var d workflowDoc
	err := s.col(colWorkflows).FindOne(ctx, bson.D{{Key: "_id", Value: id}, {Key: "userId", Value: userID}}).Decode(&d)
	if err != nil {
		return nil, findErr(err, "workflow")
	}
	if err := s.catchUp(ctx, &d); err != nil {
		return nil, err
	}
	return &d, nil
}

// catchUp replays onto d the history entries that follow it.
func (s *Store) catchUp(ctx context.Context, d *workflowDoc) error {
	for range maxRollForward {
		var next versionDoc
		err := s.col(colWorkflowVersions).FindOne(ctx, bson.D{{Key: "_id", Value: versionID(d.ID, d.Version+1)}}).Decode(&next)
		if errors.Is(err, mongo.ErrNoDocuments) {
			return nil
		}
		if err != nil {
			return internal(err)
		}
		d.apply(&next)
		s.advance(ctx, &next)
	}
	return events.Errorf(events.CodeUnavailable, "workflow history is too far ahead of its head")
}

// advance moves the stored head to entry v unless it is already there or
// past it. It only refreshes a cache that head re-checks, so a failure here
// loses nothing and is not reported.
func (s *Store) advance(ctx context.Context, v *versionDoc) {
	_, _ = s.col(colWorkflows).UpdateOne(ctx,
		bson.D{{Key: "_id", Value: v.WorkflowID}, {Key: "version", Value: bson.D{{Key: "$lt", Value: v.Version}}}},
		bson.D{{Key: "$set", Value: bson.D{
			{Key: "version", Value: v.Version},
			{Key: "name", Value: v.Name},
			{Key: "description", Value: v.Description},
			{Key: "definition", Value: v.Definition},
			{Key: "updatedAt", Value: v.UpdatedAt},
			{Key: "deleted", Value: v.Deleted},
		}}})
}

// appendEntry appends entry (its content; the rest is filled in here) to
// the history of a live workflow. It claims the version number after the head by inserting its history
// entry, whose _id makes the claim unique. Losing the claim means a racing
// writer took that number; the loop then reads the head again (helping the
// winner forward) and claims the number after. Racing updates therefore all
// land, as consecutive versions, without transactions.
func (s *Store) appendEntry(ctx context.Context, userID, id string, entry versionDoc) (*versionDoc, error) {
	for range maxAttempts {
		cur, err := s.head(ctx, userID, id)
		if err != nil {
			return nil, err
		}
		if cur.Deleted {
			return nil, events.Errorf(events.CodeNotFound, "workflow not found")
		}
		v := entry
		v.ID, v.WorkflowID, v.UserID, v.Version = versionID(id, cur.Version+1), id, userID, cur.Version+1
		v.CreatedAt, v.UpdatedAt = cur.CreatedAt, s.stamp(time.Time{})
		_, err = s.col(colWorkflowVersions).InsertOne(ctx, v)
		if mongo.IsDuplicateKeyError(err) {
			continue
		}
		if err != nil {
			return nil, internal(err)
		}
		// The entry is the commit point; moving the head is only a cache
		// refresh that the next read would also make.
		s.advance(ctx, &v)
		return &v, nil
	}
	return nil, events.Errorf(events.CodeConflict, "workflow is being changed by others; try again")
}

// GetWorkflow returns the latest version of a live workflow.
func (s *Store) GetWorkflow(ctx context.Context, userID, id string) (*persistence.Workflow, error) {
	d, err := s.head(ctx, userID, id)
	if err != nil {
		return nil, err
	}
	if d.Deleted {
		return nil, events.Errorf(events.CodeNotFound, "workflow not found")
	}
	return d.workflow(), nil
}

// GetWorkflowVersion reads one history entry; it stays readable after the
// workflow is deleted.
func (s *Store) GetWorkflowVersion(ctx context.Context, userID, id string, version int) (*persistence.Workflow, error) {
	var v versionDoc
	err := s.col(colWorkflowVersions).FindOne(ctx, bson.D{
		{Key: "_id", Value: versionID(id, version)},
		{Key: "userId", Value: userID},
		{Key: "deleted", Value: false},
	}).Decode(&v)
	if err != nil {
		return nil, findErr(err, "workflow version")
	}
	d := workflowDoc{ID: v.WorkflowID, UserID: v.UserID, CreatedAt: v.CreatedAt}
	d.apply(&v)
	return d.workflow(), nil
}

// UpdateWorkflow appends w as the next version (see appendEntry).
func (s *Store) UpdateWorkflow(ctx context.Context, w *persistence.Workflow) error {
	v, err := s.appendEntry(ctx, w.UserID, w.ID,
		versionDoc{Name: w.Name, Description: w.Description, Definition: string(w.Definition)})
	if err != nil {
		return err
	}
	w.Version, w.CreatedAt, w.UpdatedAt = v.Version, v.CreatedAt, v.UpdatedAt
	return nil
}

// DeleteWorkflow appends a tombstone to the history. Going through the
// same claim as updates orders a delete against racing updates: an update
// either lands before it or finds the workflow gone.
func (s *Store) DeleteWorkflow(ctx context.Context, userID, id string) error {
	_, err := s.appendEntry(ctx, userID, id, versionDoc{Deleted: true})
	return err
}

// ListWorkflows pages through live heads by id, newest first, asking for
// one more than the page to learn whether another page follows. One query
// for the entries after the page's heads finds any stale head; those few
// are rolled forward, and dropped if that shows them deleted (the page is
// then shorter, but the cursor is still right).
func (s *Store) ListWorkflows(ctx context.Context, userID string, p persistence.Page) ([]persistence.Workflow, string, error) {
	limit := persistence.PageLimit(p.Limit)
	filter := bson.D{{Key: "userId", Value: userID}, {Key: "deleted", Value: false}}
	if p.Cursor != "" {
		filter = append(filter, bson.E{Key: "_id", Value: bson.D{{Key: "$lt", Value: p.Cursor}}})
	}
	docs, next, err := findPage(ctx, s.col(colWorkflows), filter,
		options.Find().SetSort(bson.D{{Key: "_id", Value: -1}}).SetLimit(int64(limit+1)), limit,
		func(d *workflowDoc) string { return d.ID })
	if err != nil {
		return nil, "", err
	}
	if len(docs) == 0 {
		return []persistence.Workflow{}, next, nil
	}

	successors := make(bson.A, len(docs))
	for i, d := range docs {
		successors[i] = versionID(d.ID, d.Version+1)
	}
	cur, err := s.col(colWorkflowVersions).Find(ctx,
		bson.D{{Key: "_id", Value: bson.D{{Key: "$in", Value: successors}}}},
		options.Find().SetProjection(bson.D{{Key: "workflowId", Value: 1}}))
	if err != nil {
		return nil, "", internal(err)
	}
	var stale []versionDoc
	if err := cur.All(ctx, &stale); err != nil {
		return nil, "", internal(err)
	}
	behind := make(map[string]bool, len(stale))
	for _, v := range stale {
		behind[v.WorkflowID] = true
	}

	list := make([]persistence.Workflow, 0, len(docs))
	for i := range docs {
		d := &docs[i]
		if behind[d.ID] {
			if err := s.catchUp(ctx, d); err != nil {
				return nil, "", err
			}
			if d.Deleted {
				continue
			}
		}
		list = append(list, *d.workflow())
	}
	return list, next, nil
}
