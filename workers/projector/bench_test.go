package projector

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/weftdev/weft/events"
	"github.com/weftdev/weft/events/natstest"
)

// benchEvents is n executions of the common shape: queued, a node event,
// the terminal event with the rest of the nodes (three events each).
func benchEvents(n int, tag string, at time.Time) []events.Event {
	out := make([]events.Event, 0, 3*n)
	for i := range n {
		x := exec{id: fmt.Sprintf("%s-%07d", tag, i), user: fmt.Sprintf("u%d", i%8), wf: fmt.Sprintf("w%d", i%20), at: at}
		out = append(out, x.ev(events.KindQueued),
			x.ev(events.KindNode, node("a", "INPUT", "completed"), node("b", "TRANSFORM", "completed")),
			x.end(events.KindCompleted, float64(1+i%50), node("c", "HTTP", "completed"), node("d", "OUTPUT", "completed")))
	}
	return out
}

// BenchmarkApplyBatch measures applying alone: one transaction applies
// 256 events (85 executions and a third) of fresh executions.
func BenchmarkApplyBatch(b *testing.B) {
	bn := setup(b)
	p := NewWithConfig(bn.js, bn.rdb, Config{Prefix: bn.prefix})
	ctx := context.Background()
	require.NoError(b, bn.rdb.Set(ctx, p.k.marker(), "bench", 0).Err())
	evs := benchEvents((b.N*256+2)/3, "b", time.Now())
	wire := make([]wireEvent, len(evs))
	for i, e := range evs {
		wire[i] = wireEvent{ExecutionID: e.ExecutionID, Kind: e.Kind, UserID: e.UserID,
			WorkflowID: e.WorkflowID, At: e.At, Nodes: e.Nodes, DurationMs: e.DurationMs}
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		require.NoError(b, p.applyEvents(ctx, wire[i*256:(i+1)*256]))
	}
	b.ReportMetric(float64(b.N*256)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkProject measures the whole projector: events already in the
// stream, consumed, applied and acked.
func BenchmarkProject(b *testing.B) {
	bn := setup(b)
	evs := benchEvents((b.N+2)/3, "p", time.Now())
	_, js := natstest.Connect(b, bn.js.Conn().ConnectedUrl())
	for _, ev := range evs {
		data, err := json.Marshal(ev)
		require.NoError(b, err)
		_, err = js.PublishAsync(events.EventSubject(ev.ExecutionID, ev.Kind), data)
		require.NoError(b, err)
	}
	<-js.PublishAsyncComplete()
	b.ResetTimer()
	bn.start(b, Config{})
	bn.waitIdle(b)
	b.ReportMetric(float64(len(evs))/b.Elapsed().Seconds(), "events/s")
}
