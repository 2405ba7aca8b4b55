package mongo_test

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/weftdev/weft/persistence"
	weftmongo "github.com/weftdev/weft/persistence/mongo"
)

// TestDataRedeliveryAfterCrash loses a write's recorded result, as a
// worker that stops between the write and the record does: the redelivery
// must still not apply the update twice, thanks to each document's mark.
func TestDataRedeliveryAfterCrash(t *testing.T) {
	t.Parallel()
	s, name := open(t)
	ctx := t.Context()
	_, err := s.Data(ctx, persistence.DataRequest{UserID: "u1", Collection: "c", Operation: persistence.OpInsertMany,
		Documents: []any{map[string]any{"_id": "a", "n": 1}, map[string]any{"_id": "b", "n": 1}}})
	require.NoError(t, err)

	req := persistence.DataRequest{UserID: "u1", Collection: "c", Operation: persistence.OpUpdateMany,
		Update: map[string]any{"$inc": map[string]any{"n": 1}}, IdempotencyKey: "ex1:up"}
	first, err := s.Data(ctx, req)
	require.NoError(t, err)
	require.Equal(t, [2]int64{2, 2}, [2]int64{first.Matched, first.Modified})

	_, err = admin.Database(name).Collection("dataWrites").DeleteMany(ctx, bson.D{})
	require.NoError(t, err)
	again, err := s.Data(ctx, req)
	require.NoError(t, err)
	require.Equal(t, first.Output(req.Operation), again.Output(req.Operation))

	res, err := s.Data(ctx, persistence.DataRequest{UserID: "u1", Collection: "c", Operation: persistence.OpCount,
		Filter: map[string]any{"n": 2}})
	require.NoError(t, err)
	require.Equal(t, int64(2), res.Count, "each document incremented once")

	// The stored layout keeps the owner outside the user's document.
	var raw bson.M
	require.NoError(t, admin.Database(name).Collection("data").FindOne(ctx, bson.D{{Key: "u", Value: "u1"}}).Decode(&raw))
	require.Equal(t, "c", raw["c"])
	require.NotContains(t, raw["doc"], "u")
}

// TestDataWritesExpire: the recorded results of writes expire after
// persistence.DataWriteRetention, as the embedded store prunes them: by a
// TTL index where the server has them (MongoDB), else by the store itself
// (FerretDB v1). A database of an older version, whose index on at never
// expired anything, is brought along on the next start.
func TestDataWritesExpire(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	name := fmt.Sprintf("weft_test_old_%d_%d", os.Getpid(), dbSeq.Add(1))
	t.Cleanup(func() { _ = admin.Database(name).Drop(context.WithoutCancel(ctx)) })
	writes := admin.Database(name).Collection("dataWrites")
	_, err := writes.Indexes().CreateOne(ctx, mongo.IndexModel{Keys: bson.D{{Key: "at", Value: 1}}, Options: options.Index().SetName("at")})
	require.NoError(t, err)
	now := time.Now()
	_, err = writes.InsertMany(ctx, []any{
		bson.D{{Key: "_id", Value: "2:u1/stale"}, {Key: "r", Value: "{}"}, {Key: "at", Value: now.Add(-persistence.DataWriteRetention - time.Hour)}},
		bson.D{{Key: "_id", Value: "2:u1/kept"}, {Key: "r", Value: "{}"}, {Key: "at", Value: now.Add(-persistence.DataWriteRetention + time.Hour)}},
	})
	require.NoError(t, err)

	// Two starts: the second finds nothing to do.
	for range 2 {
		s, err := weftmongo.Open(ctx, uri, name)
		require.NoError(t, err)
		_, err = s.Data(ctx, persistence.DataRequest{UserID: "u1", Collection: "c", Operation: persistence.OpInsertOne,
			Document: map[string]any{"a": 1}, IdempotencyKey: "ex1:ins"})
		require.NoError(t, err)
		require.NoError(t, s.Close())
	}

	specs, err := writes.Indexes().ListSpecifications(ctx)
	require.NoError(t, err)
	byName := map[string]mongo.IndexSpecification{}
	for _, sp := range specs {
		byName[sp.Name] = sp
	}
	var left []string
	cur, err := writes.Find(ctx, bson.D{}, options.Find().SetSort(bson.D{{Key: "_id", Value: 1}}))
	require.NoError(t, err)
	var docs []struct {
		ID string `bson:"_id"`
	}
	require.NoError(t, cur.All(ctx, &docs))
	for _, d := range docs {
		left = append(left, d.ID)
	}

	if ttl, ok := byName["at_ttl"]; ok {
		// The server expires them: the TTL index replaces the old one.
		require.NotNil(t, ttl.ExpireAfterSeconds)
		require.Equal(t, int32(persistence.DataWriteRetention/time.Second), *ttl.ExpireAfterSeconds)
		require.NotContains(t, byName, "at")
		return
	}
	// No TTL index on this server: the store prunes on its first write.
	require.Contains(t, byName, "at")
	require.Equal(t, []string{"2:u1/ex1:ins", "2:u1/kept"}, left)
}
