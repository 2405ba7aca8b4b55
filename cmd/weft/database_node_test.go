package main

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// ordersWorkflow inserts the input's order, then lists the caller's big
// orders.
func ordersWorkflow() map[string]any {
	return map[string]any{
		"name": "orders",
		"nodes": []any{
			map[string]any{"id": "in", "type": "INPUT", "config": map[string]any{"fields": map[string]any{
				"id": map[string]any{"type": "string", "required": true}, "total": map[string]any{"type": "number", "required": true}}}},
			map[string]any{"id": "save", "type": "DATABASE", "config": map[string]any{"operation": "insertOne", "collection": "orders",
				"document": map[string]any{"_id": "{{ input.id }}", "total": "{{ input.total }}"}}},
			map[string]any{"id": "big", "type": "DATABASE", "config": map[string]any{"operation": "find", "collection": "orders",
				"filter": map[string]any{"total": map[string]any{"$gte": 10}}, "sort": map[string]any{"total": -1}}},
			map[string]any{"id": "out", "type": "OUTPUT", "config": map[string]any{"value": map[string]any{
				"inserted": "{{ nodes.save.output.insertedIds }}", "big": "{{ nodes.big.output.documents }}"}}},
		},
		"edges": []any{map[string]any{"from": "in", "to": "save"}, map[string]any{"from": "save", "to": "big"}, map[string]any{"from": "big", "to": "out"}},
	}
}

// TestDatabaseNodeKeepsEachUsersData runs DATABASE nodes through the
// engine for two users with the same collection and ids: each sees only
// their own documents.
func TestDatabaseNodeKeepsEachUsersData(t *testing.T) {
	t.Parallel()
	b := setup(t)
	run := func(u user, wf, id string, total float64) map[string]any {
		res := b.call(t, "POST", "/api/executions?wait=20s", u.Token, map[string]any{"workflowId": wf, "inputs": map[string]any{"id": id, "total": total}})
		require.Equal(t, 200, res.Status, string(res.Raw))
		require.Equal(t, "completed", res.Body["status"], string(res.Raw))
		return res.Body["output"].(map[string]any)
	}
	ann, bob := b.register(t), b.register(t)
	annWF, bobWF := b.workflow(t, ann, ordersWorkflow()), b.workflow(t, bob, ordersWorkflow())

	run(ann, annWF, "a", 12)
	out := run(ann, annWF, "b", 30)
	require.Equal(t, []any{"b"}, out["inserted"])
	require.Equal(t, []any{map[string]any{"_id": "b", "total": 30.0}, map[string]any{"_id": "a", "total": 12.0}}, out["big"])

	// Bob's "a" is his own; he never sees Ann's orders.
	out = run(bob, bobWF, "a", 11)
	require.Equal(t, []any{map[string]any{"_id": "a", "total": 11.0}}, out["big"])

	// An operator outside the contract's list is refused when saved.
	bad := ordersWorkflow()
	bad["nodes"].([]any)[2].(map[string]any)["config"].(map[string]any)["filter"] = map[string]any{"$where": "1"}
	res := b.call(t, "POST", "/api/workflows", ann.Token, bad)
	require.Equal(t, 400, res.Status, string(res.Raw))
	require.Contains(t, string(res.Raw), "nodes[2].config.filter")
}
