package sqlite_test

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/weftdev/weft/persistence"
	"github.com/weftdev/weft/persistence/sqlite"
)

// BenchmarkExecutionLifecycle measures the engine's write path: every
// parallel worker creates an execution, applies a start with five node
// results, and finishes it. One op is one whole execution, so executions/s
// is 1e9 / ns/op; concurrent ops share commits through the group commit.
func BenchmarkExecutionLifecycle(b *testing.B) {
	ctx := b.Context()
	s, err := sqlite.Open(ctx, filepath.Join(b.TempDir(), "weft.db"))
	require.NoError(b, err)
	b.Cleanup(func() { require.NoError(b, s.Close()) })

	var seq atomic.Int64
	inputs := json.RawMessage(`{"order":42,"customer":"ann@example.com"}`)
	output := json.RawMessage(`{"ok":true,"total":99.5}`)
	// Many more goroutines than cores: the engine has many workers waiting
	// on the store at once, and they are what fills a batch.
	b.SetParallelism(16)
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			now := time.Now()
			id := fmt.Sprintf("01JBENCH%018d", seq.Add(1))
			_, created, err := s.CreateExecution(ctx, &persistence.Execution{
				ID: id, UserID: "01JUSER", WorkflowID: "01JWF", WorkflowVersion: 1,
				Status: persistence.StatusQueued, Inputs: inputs, CreatedAt: now,
			})
			if err != nil || !created {
				b.Fatalf("create: %v (created %v)", err, created)
			}
			nodes := make(map[string]*persistence.NodeState, 5)
			for i := range 5 {
				nodes[fmt.Sprintf("n%d", i)] = &persistence.NodeState{Type: "transform", Status: persistence.StatusCompleted,
					Attempts: 1, StartedAt: &now, FinishedAt: &now, Output: output}
			}
			if _, err := s.ApplyExecution(ctx, persistence.ExecutionUpdate{ID: id, Start: &now, Nodes: nodes}); err != nil {
				b.Fatalf("apply: %v", err)
			}
			res, err := s.ApplyExecution(ctx, persistence.ExecutionUpdate{ID: id,
				Finish: &persistence.Finish{Status: persistence.StatusCompleted, Output: output, At: now}})
			if err != nil || !res.Finished {
				b.Fatalf("finish: %v (finished %v)", err, res.Finished)
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "executions/s")
	if batches, writes := sqlite.BatchStats(s); batches > 0 {
		b.ReportMetric(float64(writes)/float64(batches), "writes/commit")
	}
}
