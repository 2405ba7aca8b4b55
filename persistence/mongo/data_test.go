package mongo_test

import (
	"testing"

	"github.com/stretchr/testify/require"
	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/weftdev/weft/persistence"
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
