package main

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestDashboardCountersAndRebuild runs executions, reads the projector's
// counters, empties Redis of them, and sees them rebuilt from the stream.
func TestDashboardCountersAndRebuild(t *testing.T) {
	t.Parallel()
	b := setup(t)
	u := b.register(t)
	wf := b.workflow(t, u, seedWorkflow())
	for _, text := range []string{"one", "two", "three"} {
		res := b.call(t, "POST", "/api/executions?wait=10s", u.Token, map[string]any{"workflowId": wf, "inputs": map[string]any{"text": text}})
		require.Equal(t, 200, res.Status, string(res.Raw))
	}
	completed := func() float64 {
		o := b.call(t, "GET", "/api/dashboard/overview", u.Token, nil)
		require.Equal(t, 200, o.Status, string(o.Raw))
		return o.Body["executions"].(map[string]any)["completed"].(float64)
	}
	require.Eventually(t, func() bool { return completed() == 3 }, 10*time.Second, 20*time.Millisecond)
	o := b.call(t, "GET", "/api/dashboard/overview", u.Token, nil)
	ex := o.Body["executions"].(map[string]any)
	require.EqualValues(t, 3, ex["total"])
	require.EqualValues(t, 0, ex["queued"])
	require.EqualValues(t, 0, ex["running"])
	nodes := o.Body["nodes"].(map[string]any)
	require.EqualValues(t, 15, nodes["total"], "five nodes ran in each")
	require.EqualValues(t, 6, nodes["byType"].(map[string]any)["TRANSFORM"])
	require.EqualValues(t, 1, o.Body["workflows"])

	wfs := b.call(t, "GET", "/api/dashboard/workflows", u.Token, nil)
	require.Equal(t, 200, wfs.Status)
	require.Len(t, wfs.Body["items"], 1)
	require.Equal(t, 200, b.call(t, "GET", "/api/dashboard/metrics", u.Token, nil).Status)

	// Another user's counters are their own.
	other := b.register(t)
	oo := b.call(t, "GET", "/api/dashboard/overview", other.Token, nil)
	require.EqualValues(t, 0, oo.Body["executions"].(map[string]any)["total"])

	// Empty Redis of everything this process keeps there.
	ctx := context.Background()
	iter := b.main.rdb.Scan(ctx, 0, b.main.Config.RedisPrefix+"*", 1000).Iterator()
	for iter.Next(ctx) {
		require.NoError(t, b.main.rdb.Del(ctx, iter.Val()).Err())
	}
	require.NoError(t, iter.Err())
	require.Eventually(t, func() bool { return completed() == 3 }, 15*time.Second, 50*time.Millisecond, "rebuilt from the stream")
}

// TestQueuedGauge: an execution no starter takes shows as queued once it
// has waited a second, and leaves the gauge when it runs.
func TestQueuedGauge(t *testing.T) {
	t.Parallel()
	b := setup(t)
	u := b.register(t)
	wf := b.workflow(t, u, seedWorkflow())
	b.main.engine.Stop()
	b.submit(t, u, wf, "wait")
	gauge := func(name string) float64 {
		o := b.call(t, "GET", "/api/dashboard/overview", u.Token, nil)
		return o.Body["executions"].(map[string]any)[name].(float64)
	}
	require.Eventually(t, func() bool { return gauge("queued") == 1 }, 10*time.Second, 50*time.Millisecond)
	require.NoError(t, b.main.engine.Start(context.Background(), []string{"INPUT", "TRANSFORM", "CONDITION", "OUTPUT"}))
	t.Cleanup(b.main.engine.Stop)
	require.Eventually(t, func() bool { return gauge("queued") == 0 && gauge("completed") == 1 }, 10*time.Second, 50*time.Millisecond)
}
