package sqlite_test

import (
	"fmt"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/weftdev/weft/persistence"
)

// TestDataOneWriteContention races updateOne callers, each under its own
// key, on documents that all match, many times: none may report that it
// matched nothing while a matching document remains.
func TestDataOneWriteContention(t *testing.T) {
	t.Parallel()
	s := open(t)
	ctx := t.Context()
	const docs, rounds = 4, 50
	for round := range rounds {
		coll := fmt.Sprintf("c%d", round)
		var seed []any
		for i := range docs {
			seed = append(seed, map[string]any{"_id": fmt.Sprintf("d%d", i), "n": 0})
		}
		_, err := s.Data(ctx, persistence.DataRequest{UserID: "u", Collection: coll, Operation: persistence.OpInsertMany, Documents: seed})
		require.NoError(t, err)
		var wg sync.WaitGroup
		res := make([]*persistence.DataResult, docs)
		errs := make([]error, docs)
		for i := range docs {
			wg.Go(func() {
				res[i], errs[i] = s.Data(ctx, persistence.DataRequest{UserID: "u", Collection: coll, Operation: persistence.OpUpdateOne,
					Filter: map[string]any{"n": 0}, Update: map[string]any{"$set": map[string]any{"n": 1}},
					IdempotencyKey: fmt.Sprintf("ex%d:%d", round, i)})
			})
		}
		wg.Wait()
		for i := range docs {
			require.NoError(t, errs[i])
			require.Equal(t, [2]int64{1, 1}, [2]int64{res[i].Matched, res[i].Modified}, "round %d, caller %d", round, i)
			// The recorded answer is the one given.
			again, err := s.Data(ctx, persistence.DataRequest{UserID: "u", Collection: coll, Operation: persistence.OpUpdateOne,
				Filter: map[string]any{"n": 0}, Update: map[string]any{"$set": map[string]any{"n": 1}},
				IdempotencyKey: fmt.Sprintf("ex%d:%d", round, i)})
			require.NoError(t, err)
			require.Equal(t, res[i].Matched, again.Matched)
		}
		left, err := s.Data(ctx, persistence.DataRequest{UserID: "u", Collection: coll, Operation: persistence.OpCount, Filter: map[string]any{"n": 0}})
		require.NoError(t, err)
		require.Zero(t, left.Count, "round %d", round)
	}
}
