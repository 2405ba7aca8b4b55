package mongo

import (
	"context"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/weftdev/weft/events"
	"github.com/weftdev/weft/persistence"
)

type userDoc struct {
	ID           string    `bson:"_id"`
	Email        string    `bson:"email"`
	Name         string    `bson:"name"`
	PasswordHash string    `bson:"passwordHash"`
	CreatedAt    time.Time `bson:"createdAt"`
}

// CreateUser stores u; a taken email or id is a conflict.
func (s *Store) CreateUser(ctx context.Context, u *persistence.User) error {
	u.CreatedAt = s.stamp(u.CreatedAt)
	_, err := s.col(colUsers).InsertOne(ctx, userDoc(*u))
	if err != nil {
		return insertErr(err, "user")
	}
	return nil
}

// UserByEmail finds a user by the exact (already lower-cased) email.
func (s *Store) UserByEmail(ctx context.Context, email string) (*persistence.User, error) {
	return s.user(ctx, bson.D{{Key: "email", Value: email}})
}

// UserByID finds a user by id.
func (s *Store) UserByID(ctx context.Context, id string) (*persistence.User, error) {
	return s.user(ctx, bson.D{{Key: "_id", Value: id}})
}

func (s *Store) user(ctx context.Context, filter bson.D) (*persistence.User, error) {
	var d userDoc
	if err := s.col(colUsers).FindOne(ctx, filter).Decode(&d); err != nil {
		return nil, findErr(err, "user")
	}
	u := persistence.User(d)
	return &u, nil
}

type apiKeyDoc struct {
	ID        string    `bson:"_id"`
	UserID    string    `bson:"userId"`
	Name      string    `bson:"name"`
	Prefix    string    `bson:"prefix"`
	Hash      string    `bson:"hash"`
	CreatedAt time.Time `bson:"createdAt"`
}

// CreateAPIKey stores k; a reused hash or id is a conflict.
func (s *Store) CreateAPIKey(ctx context.Context, k *persistence.APIKey) error {
	k.CreatedAt = s.stamp(k.CreatedAt)
	if _, err := s.col(colAPIKeys).InsertOne(ctx, apiKeyDoc(*k)); err != nil {
		return insertErr(err, "api key")
	}
	return nil
}

// APIKeyByHash finds a key by the hash of its secret.
func (s *Store) APIKeyByHash(ctx context.Context, hash string) (*persistence.APIKey, error) {
	var d apiKeyDoc
	if err := s.col(colAPIKeys).FindOne(ctx, bson.D{{Key: "hash", Value: hash}}).Decode(&d); err != nil {
		return nil, findErr(err, "api key")
	}
	k := persistence.APIKey(d)
	return &k, nil
}

// ListAPIKeys lists the user's keys, newest (highest id) first.
func (s *Store) ListAPIKeys(ctx context.Context, userID string) ([]persistence.APIKey, error) {
	cur, err := s.col(colAPIKeys).Find(ctx, bson.D{{Key: "userId", Value: userID}},
		options.Find().SetSort(bson.D{{Key: "_id", Value: -1}}))
	if err != nil {
		return nil, internal(err)
	}
	var docs []apiKeyDoc
	if err := cur.All(ctx, &docs); err != nil {
		return nil, internal(err)
	}
	keys := make([]persistence.APIKey, len(docs))
	for i, d := range docs {
		keys[i] = persistence.APIKey(d)
	}
	return keys, nil
}

// DeleteAPIKey removes the user's key; another user's key is not found.
func (s *Store) DeleteAPIKey(ctx context.Context, userID, id string) error {
	res, err := s.col(colAPIKeys).DeleteOne(ctx, bson.D{{Key: "_id", Value: id}, {Key: "userId", Value: userID}})
	if err != nil {
		return internal(err)
	}
	if res.DeletedCount == 0 {
		return events.Errorf(events.CodeNotFound, "api key not found")
	}
	return nil
}

type sessionDoc struct {
	ID          string    `bson:"_id"`
	UserID      string    `bson:"userId"`
	RefreshHash string    `bson:"refreshHash"`
	CreatedAt   time.Time `bson:"createdAt"`
	ExpiresAt   time.Time `bson:"expiresAt"`
}

// usedRefreshDoc records that a refresh hash of a session was spent. Its
// _id, "<sessionId>:<hash>", can be inserted once only: that insert, not
// the update of the session, is what makes a refresh token single-use.
type usedRefreshDoc struct {
	ID        string    `bson:"_id"`
	SessionID string    `bson:"sessionId"`
	UsedAt    time.Time `bson:"usedAt"`
}

// CreateSession stores a new login.
func (s *Store) CreateSession(ctx context.Context, sess *persistence.Session) error {
	sess.CreatedAt = s.stamp(sess.CreatedAt)
	sess.ExpiresAt = sess.ExpiresAt.UTC().Truncate(time.Millisecond)
	if _, err := s.col(colSessions).InsertOne(ctx, sessionDoc(*sess)); err != nil {
		return insertErr(err, "session")
	}
	return nil
}

// SessionByID finds a session by id.
func (s *Store) SessionByID(ctx context.Context, id string) (*persistence.Session, error) {
	var d sessionDoc
	if err := s.col(colSessions).FindOne(ctx, bson.D{{Key: "_id", Value: id}}).Decode(&d); err != nil {
		return nil, findErr(err, "session")
	}
	sess := persistence.Session(d)
	return &sess, nil
}

// RotateSession spends oldHash and installs newHash.
//
// A conditional UpdateOne {_id, refreshHash: oldHash} alone would be
// enough on MongoDB, but FerretDB v1 runs an update as a read followed by
// a replace, so two racing rotations could both match. Instead the token is
// spent by inserting its usedRefreshHashes document, which a unique _id
// lets exactly one caller do on either server; only that caller then moves
// the session on. A crash between the two steps leaves the session
// unrefreshable (the user logs in again), never a token usable twice.
func (s *Store) RotateSession(ctx context.Context, id, oldHash, newHash string, expiresAt time.Time) error {
	cur, err := s.SessionByID(ctx, id)
	if err != nil {
		return err
	}
	if cur.RefreshHash != oldHash {
		return events.Errorf(events.CodeConflict, "refresh token already used")
	}
	_, err = s.col(colUsedRefreshes).InsertOne(ctx, usedRefreshDoc{ID: id + ":" + oldHash, SessionID: id, UsedAt: s.stamp(time.Time{})})
	if mongo.IsDuplicateKeyError(err) {
		return events.Errorf(events.CodeConflict, "refresh token already used")
	}
	if err != nil {
		return internal(err)
	}
	res, err := s.col(colSessions).UpdateOne(ctx,
		bson.D{{Key: "_id", Value: id}, {Key: "refreshHash", Value: oldHash}},
		bson.D{{Key: "$set", Value: bson.D{
			{Key: "refreshHash", Value: newHash},
			{Key: "expiresAt", Value: expiresAt.UTC().Truncate(time.Millisecond)},
		}}})
	if err != nil {
		return internal(err)
	}
	if res.MatchedCount == 0 {
		// Deleted since we read it.
		return events.Errorf(events.CodeNotFound, "session not found")
	}
	return nil
}

// DeleteSession ends a login and forgets its spent refresh hashes; a
// missing session is not found.
func (s *Store) DeleteSession(ctx context.Context, id string) error {
	res, err := s.col(colSessions).DeleteOne(ctx, bson.D{{Key: "_id", Value: id}})
	if err != nil {
		return internal(err)
	}
	if res.DeletedCount == 0 {
		return events.Errorf(events.CodeNotFound, "session not found")
	}
	// The session is gone, so its spent hashes guard nothing any more; a
	// leftover from a failure here is harmless.
	if _, err := s.col(colUsedRefreshes).DeleteMany(ctx, bson.D{{Key: "sessionId", Value: id}}); err != nil {
		return internal(err)
	}
	return nil
}
