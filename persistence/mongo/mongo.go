package mongo

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/weftdev/weft/events"
	"github.com/weftdev/weft/persistence"
)

// Collection names.
const (
	colUsers            = "users"
	colAPIKeys          = "apiKeys"
	colSessions         = "sessions"
	colUsedRefreshes    = "usedRefreshHashes"
	colWorkflows        = "workflows"
	colWorkflowVersions = "workflowVersions"
	colExecutions       = "executions"
	colExecutionKeys    = "executionKeys"
	colExecutionFinals  = "executionFinals"
	colExecutionNodes   = "executionNodes"
	colExecutionLogs    = "executionLogs"
)

// Store is the MongoDB persistence.Store. It works against MongoDB and
// FerretDB v1 alike, so it uses no transactions.
type Store struct {
	client *mongo.Client
	db     *mongo.Database
	now    func() time.Time
	// pruneWrites is set when the server has no TTL indexes (FerretDB v1):
	// the store then deletes expired results of writes itself (data.go).
	pruneWrites bool
	lastPrune   atomic.Int64
}

var _ persistence.Store = (*Store)(nil)

// Open connects to uri, uses the named database and creates the indexes
// the store relies on (unique emails, key hashes) before returning.
func Open(ctx context.Context, uri, database string) (*Store, error) {
	client, err := mongo.Connect(options.Client().ApplyURI(uri))
	if err != nil {
		return nil, fmt.Errorf("mongo: connect: %w", err)
	}
	s := &Store{client: client, db: client.Database(database), now: time.Now}
	if err := s.Ping(ctx); err != nil {
		_ = client.Disconnect(context.WithoutCancel(ctx))
		return nil, err
	}
	if err := s.createIndexes(ctx); err != nil {
		_ = client.Disconnect(context.WithoutCancel(ctx))
		return nil, err
	}
	return s, nil
}

// createIndexes runs at every start and creates the indexes that are not
// there yet. It asks first rather than relying on createIndexes being a
// no-op for existing indexes: MongoDB treats it so, but FerretDB v1 drops
// the connection when a batch names an index that exists.
func (s *Store) createIndexes(ctx context.Context) error {
	index := func(name string, unique bool, keys bson.D) indexSpec {
		return indexSpec{name: name, unique: unique, keys: keys}
	}
	for col, specs := range map[string][]indexSpec{
		colUsers: {index("email_unique", true, bson.D{{Key: "email", Value: 1}})},
		colAPIKeys: {
			index("hash_unique", true, bson.D{{Key: "hash", Value: 1}}),
			index("user_id", false, bson.D{{Key: "userId", Value: 1}, {Key: "_id", Value: -1}}),
		},
		colSessions:      {index("user", false, bson.D{{Key: "userId", Value: 1}})},
		colUsedRefreshes: {index("session", false, bson.D{{Key: "sessionId", Value: 1}})},
		colWorkflows: {
			index("user_live_id", false, bson.D{{Key: "userId", Value: 1}, {Key: "deleted", Value: 1}, {Key: "_id", Value: -1}}),
		},
		// Versions are found by _id "<workflowId>:<version>", which is also
		// what makes each version number claimable only once.
		colWorkflowVersions: {index("workflow_version", false, bson.D{{Key: "workflowId", Value: 1}, {Key: "version", Value: 1}})},
		// Executions are listed per user, by workflow or by status, newest
		// first; the reconciler walks the queued and running by age.
		colExecutions: {
			index("user_id", false, bson.D{{Key: "userId", Value: 1}, {Key: "_id", Value: -1}}),
			index("user_workflow_id", false, bson.D{{Key: "userId", Value: 1}, {Key: "workflowId", Value: 1}, {Key: "_id", Value: -1}}),
			index("user_status_id", false, bson.D{{Key: "userId", Value: 1}, {Key: "status", Value: 1}, {Key: "_id", Value: -1}}),
			index("status_created", false, bson.D{{Key: "status", Value: 1}, {Key: "createdAt", Value: 1}}),
		},
		// Keys are claimed by _id "<userId>:<key>" and need no other index.
		// Finals answer listings by a final status.
		colExecutionFinals: {
			index("user_status_id", false, bson.D{{Key: "userId", Value: 1}, {Key: "status", Value: 1}, {Key: "_id", Value: -1}}),
			index("user_workflow_status_id", false, bson.D{{Key: "userId", Value: 1}, {Key: "workflowId", Value: 1}, {Key: "status", Value: 1}, {Key: "_id", Value: -1}}),
		},
		colExecutionNodes: {index("execution", false, bson.D{{Key: "executionId", Value: 1}})},
		colExecutionLogs:  {index("execution_at", false, bson.D{{Key: "executionId", Value: 1}, {Key: "at", Value: 1}, {Key: "_id", Value: 1}})},
		// The data space: a user's collection, in _id order (data.go).
		// dataWrites: see writesExpiry.
		colData: {index("owner_collection_id", false, bson.D{{Key: "u", Value: 1}, {Key: "c", Value: 1}, {Key: "doc._id", Value: 1}})},
	} {
		missing, err := s.missingIndexes(ctx, col, specs)
		if err != nil {
			return err
		}
		if len(missing) == 0 {
			continue
		}
		if _, err := s.db.Collection(col).Indexes().CreateMany(ctx, missing); err != nil {
			return fmt.Errorf("mongo: create indexes on %s: %w", col, err)
		}
	}
	return s.writesExpiry(ctx)
}

// Indexes of dataWrites. Older versions made "at", a plain index the
// server never prunes by. "at_ttl" is a TTL index, on the descending key
// so that it is not the same index as "at" with other options: it can be
// created next to an old "at" (MongoDB refuses a second index on the same
// key, and FerretDB v1 drops the connection), and "at" is dropped only once
// it exists.
const (
	idxWritesAt  = "at"
	idxWritesTTL = "at_ttl"
)

// writesExpiry makes the recorded results of writes expire after
// persistence.DataWriteRetention, as the embedded store prunes them: by a
// TTL index, or where the server has none (FerretDB v1 answers
// NotImplemented) by a plain index on at and the store's own pruning.
func (s *Store) writesExpiry(ctx context.Context) error {
	idx := s.db.Collection(colDataWrites).Indexes()
	existing, err := idx.ListSpecifications(ctx)
	if err != nil {
		return fmt.Errorf("mongo: list indexes on %s: %w", colDataWrites, err)
	}
	have := map[string]bool{}
	for _, sp := range existing {
		have[sp.Name] = true
	}
	if !have[idxWritesTTL] {
		_, err := idx.CreateOne(ctx, mongo.IndexModel{Keys: bson.D{{Key: "at", Value: -1}},
			Options: options.Index().SetName(idxWritesTTL).SetExpireAfterSeconds(int32(persistence.DataWriteRetention / time.Second))})
		switch {
		case err == nil:
		case noTTL(err):
			s.pruneWrites = true
			if have[idxWritesAt] {
				return nil
			}
			if _, err := idx.CreateOne(ctx, mongo.IndexModel{Keys: bson.D{{Key: "at", Value: 1}}, Options: options.Index().SetName(idxWritesAt)}); err != nil {
				return fmt.Errorf("mongo: create indexes on %s: %w", colDataWrites, err)
			}
			return nil
		default:
			return fmt.Errorf("mongo: create indexes on %s: %w", colDataWrites, err)
		}
	}
	if have[idxWritesAt] {
		// Another instance starting at the same time may have dropped it.
		if err := idx.DropOne(ctx, idxWritesAt); err != nil && !isCommandError(err, 27, "IndexNotFound") {
			return fmt.Errorf("mongo: drop index %s on %s: %w", idxWritesAt, colDataWrites, err)
		}
	}
	return nil
}

// noTTL reports whether the server refused a TTL index as an option it
// does not offer.
func noTTL(err error) bool {
	return isCommandError(err, 238, "NotImplemented") || isCommandError(err, 197, "InvalidIndexSpecificationOption")
}

func isCommandError(err error, code int32, name string) bool {
	var ce mongo.CommandError
	return errors.As(err, &ce) && (ce.Code == code || ce.Name == name)
}

// indexSpec is one index the store needs.
type indexSpec struct {
	name   string
	unique bool
	keys   bson.D
}

// missingIndexes returns models of the specs whose names the collection
// lacks.
func (s *Store) missingIndexes(ctx context.Context, col string, specs []indexSpec) ([]mongo.IndexModel, error) {
	existing, err := s.db.Collection(col).Indexes().ListSpecifications(ctx)
	if err != nil {
		return nil, fmt.Errorf("mongo: list indexes on %s: %w", col, err)
	}
	have := make(map[string]bool, len(existing))
	for _, sp := range existing {
		have[sp.Name] = true
	}
	var missing []mongo.IndexModel
	for _, sp := range specs {
		if !have[sp.name] {
			missing = append(missing, mongo.IndexModel{Keys: sp.keys, Options: options.Index().SetName(sp.name).SetUnique(sp.unique)})
		}
	}
	return missing, nil
}

// Ping checks that the server answers.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.client.Ping(ctx, nil); err != nil {
		return fmt.Errorf("mongo: ping: %w", err)
	}
	return nil
}

// Close disconnects the client, waiting for in-flight operations.
func (s *Store) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.client.Disconnect(ctx); err != nil {
		return fmt.Errorf("mongo: disconnect: %w", err)
	}
	return nil
}

func (s *Store) col(name string) *mongo.Collection { return s.db.Collection(name) }

// stamp returns t, or the store's clock when the caller left it zero, at
// the millisecond precision BSON dates keep.
func (s *Store) stamp(t time.Time) time.Time {
	if t.IsZero() {
		t = s.now()
	}
	return t.UTC().Truncate(time.Millisecond)
}

// internal wraps a driver error so the caller sees CodeInternal and the
// cause stays in the chain for logging.
func internal(err error) error {
	return &events.Error{Code: events.CodeInternal, Message: "store error", Err: fmt.Errorf("mongo: %w", err)}
}

// insertErr maps a duplicate key to a conflict.
func insertErr(err error, what string) error {
	if mongo.IsDuplicateKeyError(err) {
		return events.Errorf(events.CodeConflict, "%s already exists", what)
	}
	return internal(err)
}

// findErr maps no document to not found.
func findErr(err error, what string) error {
	if errors.Is(err, mongo.ErrNoDocuments) {
		return events.Errorf(events.CodeNotFound, "%s not found", what)
	}
	return internal(err)
}

// findPage runs the query of one page, which asks for limit+1 documents so
// that it knows whether there is a next page, and returns the page and the
// cursor of the next ("" when none).
func findPage[T any](ctx context.Context, col *mongo.Collection, filter any, opts *options.FindOptionsBuilder, limit int, id func(*T) string) ([]T, string, error) {
	cur, err := col.Find(ctx, filter, opts)
	if err != nil {
		return nil, "", internal(err)
	}
	var docs []T
	if err := cur.All(ctx, &docs); err != nil {
		return nil, "", internal(err)
	}
	next := ""
	if len(docs) > limit {
		docs = docs[:limit]
		next = id(&docs[limit-1])
	}
	return docs, next, nil
}
