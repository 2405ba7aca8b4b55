package main

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// chain is INPUT → the given nodes in order → OUTPUT of the last one.
func chain(name string, mid ...map[string]any) map[string]any {
	nodes := []any{map[string]any{"id": "in", "type": "INPUT"}}
	var edges []any
	prev := "in"
	for _, n := range mid {
		nodes = append(nodes, n)
		edges = append(edges, map[string]any{"from": prev, "to": n["id"]})
		prev = n["id"].(string)
	}
	nodes = append(nodes, map[string]any{"id": "out", "type": "OUTPUT", "config": map[string]any{"value": "{{ nodes." + prev + ".output }}"}})
	edges = append(edges, map[string]any{"from": prev, "to": "out"})
	return map[string]any{"name": name, "nodes": nodes, "edges": edges}
}

func transform(id string, cfg map[string]any) map[string]any {
	return map[string]any{"id": id, "type": "TRANSFORM", "config": cfg}
}

// runFailed runs wf and returns the error of its failed execution.
func (b *bundle) runFailed(t *testing.T, u user, wf string) map[string]any {
	t.Helper()
	res := b.call(t, "POST", "/api/executions?wait=20s", u.Token, map[string]any{"workflowId": wf, "inputs": map[string]any{}})
	require.Equal(t, 200, res.Status, string(res.Raw))
	require.Equal(t, "failed", res.Body["status"], string(res.Raw))
	e, ok := res.Body["error"].(map[string]any)
	require.True(t, ok, string(res.Raw))
	return e
}

// TestExpressionBombsFailTheirNode: the bombs of a hostile user fail their
// own node with a coded error, in both modes, and the engine goes on.
func TestExpressionBombsFailTheirNode(t *testing.T) {
	t.Parallel()
	for _, hop := range []bool{false, true} {
		b := setup(t, func(c *Config) { c.HopPerNode = hop })
		u := b.register(t)
		nested := b.workflow(t, u, chain("nested", transform("bomb", map[string]any{
			"timeoutMs": 3000,
			"set":       map[string]any{"x": `let a = 1..1000; all(a, {all(a, {all(a, {true})})})`},
		})))
		doubling := `let a=repeat("a",500000);`
		for _, v := range "bcdefghijk" {
			doubling += "let " + string(v) + "=" + string(v-1) + "+" + string(v-1) + ";"
		}
		memory := b.workflow(t, u, chain("memory", transform("bomb", map[string]any{"set": map[string]any{"x": doubling + "len(k)"}})))
		template := b.workflow(t, u, chain("template", map[string]any{"id": "bomb", "type": "OUTPUT", "config": map[string]any{"value": `{{ let a = 1..1000; all(a, {all(a, {all(a, {true})})}) }}`}}))

		start := time.Now()
		e := b.runFailed(t, u, nested)
		require.Equal(t, "expression_timeout", e["code"])
		require.Equal(t, "bomb", e["nodeId"])
		require.Contains(t, e["message"], "set.x")
		require.Less(t, time.Since(start), 3500*time.Millisecond)

		e = b.runFailed(t, u, memory)
		require.Equal(t, "expression_too_large", e["code"])
		require.Equal(t, "bomb", e["nodeId"])

		e = b.runFailed(t, u, template)
		require.Equal(t, "expression_timeout", e["code"])
		require.Equal(t, "bomb", e["nodeId"])

		// The engine still runs ordinary work.
		wf := b.workflow(t, u, seedWorkflow())
		res := b.call(t, "POST", "/api/executions?wait=10s", u.Token, map[string]any{"workflowId": wf, "inputs": map[string]any{"text": "hi"}})
		require.Equal(t, "completed", res.Body["status"], string(res.Raw))
	}
}

// TestOutputsAreCapped: a node whose output passes its cap, or would make
// its execution hold more than the execution's, fails with
// output_too_large and nothing of it is kept.
func TestOutputsAreCapped(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *Config) { c.MaxOutputBytes = 64 << 10; c.MaxExecutionBytes = 150 << 10 })
	u := b.register(t)

	big := b.workflow(t, u, chain("big", transform("big", map[string]any{"set": map[string]any{"x": `repeat("a", 70000)`}})))
	e := b.runFailed(t, u, big)
	require.Equal(t, "output_too_large", e["code"])
	require.Equal(t, "big", e["nodeId"])

	// Each of three outputs fits; together they pass the execution's cap.
	many := b.workflow(t, u, chain("many",
		transform("a", map[string]any{"set": map[string]any{"x": `repeat("a", 60000)`}}),
		transform("b", map[string]any{"set": map[string]any{"x": `repeat("b", 60000)`}}),
		transform("c", map[string]any{"set": map[string]any{"x": `repeat("c", 60000)`}}),
	))
	res := b.call(t, "POST", "/api/executions?wait=20s", u.Token, map[string]any{"workflowId": many, "inputs": map[string]any{}})
	require.Equal(t, "failed", res.Body["status"], string(res.Raw[:min(len(res.Raw), 500)]))
	e = res.Body["error"].(map[string]any)
	require.Equal(t, "output_too_large", e["code"])
	require.Equal(t, "c", e["nodeId"])
	require.Less(t, len(res.Raw), 150<<10)
	nodes := res.Body["nodes"].(map[string]any)
	require.Nil(t, nodes["c"].(map[string]any)["output"])
	require.Equal(t, strings.Repeat("a", 60000), nodes["a"].(map[string]any)["output"].(map[string]any)["x"])
}
