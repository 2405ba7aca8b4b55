package main

import (
	"fmt"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

// exampleWorkflow is the definition from the contract.
func exampleWorkflow() map[string]any {
	return map[string]any{
		"name":        "Triage a ticket",
		"description": "optional",
		"nodes": []any{
			map[string]any{"id": "in", "type": "INPUT", "config": map[string]any{"fields": map[string]any{"text": map[string]any{"type": "string", "required": true}, "n": map[string]any{"type": "number"}}}},
			map[string]any{"id": "mood", "type": "AI_PROCESSOR", "config": map[string]any{"taskType": "sentiment_analysis", "prompt": "{{ input.text }}"}},
			map[string]any{"id": "shape", "type": "TRANSFORM", "config": map[string]any{"set": map[string]any{"upper": "upper(input.text)", "long": "len(input.text) > 20"}}},
			map[string]any{"id": "bad", "type": "CONDITION", "config": map[string]any{"expression": "nodes.mood.output.label == 'negative'"}},
			map[string]any{"id": "page", "type": "HTTP_REQUEST", "config": map[string]any{"method": "POST", "url": "https://hooks.example.com/page", "body": map[string]any{"text": "{{ input.text }}"}}},
			map[string]any{"id": "save", "type": "DATABASE", "config": map[string]any{"operation": "insertOne", "collection": "tickets", "document": map[string]any{"text": "{{ input.text }}"}}},
			map[string]any{"id": "out", "type": "OUTPUT", "config": map[string]any{"value": map[string]any{"upper": "{{ nodes.shape.output.upper }}", "mood": "{{ nodes.mood.output.label }}"}}},
		},
		"edges": []any{
			map[string]any{"from": "in", "to": "mood"}, map[string]any{"from": "in", "to": "shape"},
			map[string]any{"from": "mood", "to": "bad"},
			map[string]any{"from": "bad", "to": "page", "branch": "true"}, map[string]any{"from": "bad", "to": "save", "branch": "false"},
			map[string]any{"from": "shape", "to": "out"}, map[string]any{"from": "page", "to": "out"}, map[string]any{"from": "save", "to": "out"},
		},
	}
}

func smallWorkflow(name string) map[string]any {
	return map[string]any{
		"name": name,
		"nodes": []any{
			map[string]any{"id": "in", "type": "input"},
			map[string]any{"id": "out", "type": "output", "config": map[string]any{"value": "{{ input }}"}},
		},
		"edges": []any{map[string]any{"from": "in", "to": "out"}},
	}
}

func TestWorkflowLifecycle(t *testing.T) {
	t.Parallel()
	b := setup(t)
	u := b.register(t)

	created := b.call(t, "POST", "/api/workflows", u.Token, exampleWorkflow())
	require.Equal(t, 201, created.Status, string(created.Raw))
	id := created.Body["id"].(string)
	require.EqualValues(t, 1, created.Body["version"])
	require.Equal(t, "Triage a ticket", created.Body["name"])
	require.Len(t, created.Body["nodes"], 7)
	require.Len(t, created.Body["edges"], 8)

	got := b.call(t, "GET", "/api/workflows/"+id, u.Token, nil)
	require.Equal(t, 200, got.Status)
	require.Equal(t, created.Body, got.Body)

	changed := exampleWorkflow()
	changed["name"] = "Triage v2"
	updated := b.call(t, "PUT", "/api/workflows/"+id, u.Token, changed)
	require.Equal(t, 200, updated.Status, string(updated.Raw))
	require.EqualValues(t, 2, updated.Body["version"])
	require.Equal(t, "Triage v2", updated.Body["name"])
	require.Equal(t, created.Body["createdAt"], updated.Body["createdAt"])

	v1 := b.call(t, "GET", "/api/workflows/"+id+"/versions/1", u.Token, nil)
	require.Equal(t, 200, v1.Status)
	require.Equal(t, "Triage a ticket", v1.Body["name"])
	require.EqualValues(t, 1, v1.Body["version"])

	require.Equal(t, 204, b.call(t, "DELETE", "/api/workflows/"+id, u.Token, nil).Status)
	requireError(t, b.call(t, "GET", "/api/workflows/"+id, u.Token, nil), 404, "not_found", "-")
	requireError(t, b.call(t, "PUT", "/api/workflows/"+id, u.Token, changed), 404, "not_found", "-")
	requireError(t, b.call(t, "DELETE", "/api/workflows/"+id, u.Token, nil), 404, "not_found", "-")
	// Versions stay readable for the executions that ran them.
	require.Equal(t, 200, b.call(t, "GET", "/api/workflows/"+id+"/versions/2", u.Token, nil).Status)
	requireError(t, b.call(t, "GET", "/api/workflows/"+id+"/versions/3", u.Token, nil), 404, "not_found", "-")
	requireError(t, b.call(t, "GET", "/api/workflows/"+id+"/versions/x", u.Token, nil), 404, "not_found", "-")
}

func TestWorkflowsAreOwned(t *testing.T) {
	t.Parallel()
	b := setup(t)
	owner, other := b.register(t), b.register(t)
	id := b.call(t, "POST", "/api/workflows", owner.Token, exampleWorkflow()).Body["id"].(string)

	for _, r := range []struct{ method, path string }{
		{"GET", "/api/workflows/" + id},
		{"GET", "/api/workflows/" + id + "/versions/1"},
		{"PUT", "/api/workflows/" + id},
		{"DELETE", "/api/workflows/" + id},
	} {
		var body any
		if r.method == "PUT" {
			body = exampleWorkflow()
		}
		requireError(t, b.call(t, r.method, r.path, other.Token, body), 404, "not_found", "-")
	}
	require.Empty(t, b.call(t, "GET", "/api/workflows", other.Token, nil).Body["items"])
	// Still the owner's, unchanged.
	got := b.call(t, "GET", "/api/workflows/"+id, owner.Token, nil)
	require.Equal(t, 200, got.Status)
	require.EqualValues(t, 1, got.Body["version"])
	requireError(t, b.call(t, "GET", "/api/workflows", "", nil), 401, "unauthorized", "-")
}

func TestWorkflowPagination(t *testing.T) {
	t.Parallel()
	b := setup(t)
	u := b.register(t)
	for i := 0; i < 5; i++ {
		require.Equal(t, 201, b.call(t, "POST", "/api/workflows", u.Token, smallWorkflow(fmt.Sprintf("wf %d", i))).Status)
	}
	var names []string
	cursor := ""
	for pages := 0; pages < 10; pages++ {
		path := "/api/workflows?limit=2"
		if cursor != "" {
			path += "&cursor=" + cursor
		}
		res := b.call(t, "GET", path, u.Token, nil)
		require.Equal(t, 200, res.Status, string(res.Raw))
		for _, it := range res.Body["items"].([]any) {
			names = append(names, it.(map[string]any)["name"].(string))
		}
		if res.Body["nextCursor"] == nil {
			break
		}
		cursor = res.Body["nextCursor"].(string)
	}
	require.Equal(t, []string{"wf 4", "wf 3", "wf 2", "wf 1", "wf 0"}, names, "newest first, each once")
	requireError(t, b.call(t, "GET", "/api/workflows?limit=0", u.Token, nil), 400, "validation_failed", "limit")
	requireError(t, b.call(t, "GET", "/api/workflows?limit=abc", u.Token, nil), 400, "validation_failed", "limit")
}

func TestWorkflowValidationNamesPaths(t *testing.T) {
	t.Parallel()
	b := setup(t)
	u := b.register(t)
	mutate := func(f func(w map[string]any)) map[string]any {
		w := exampleWorkflow()
		f(w)
		return w
	}
	node := func(w map[string]any, i int) map[string]any { return w["nodes"].([]any)[i].(map[string]any) }
	cases := []struct {
		name string
		body any
		path string
	}{
		{"malformed", `{"name": `, ""},
		{"missing name", mutate(func(w map[string]any) { delete(w, "name") }), "name"},
		{"nodes not an array", mutate(func(w map[string]any) { w["nodes"] = "x" }), "nodes"},
		{"unknown type", mutate(func(w map[string]any) { node(w, 2)["type"] = "TELEPORT" }), "nodes[2].type"},
		{"duplicate id", mutate(func(w map[string]any) { node(w, 2)["id"] = "in" }), "nodes[2].id"},
		{"bad url", mutate(func(w map[string]any) { node(w, 4)["config"].(map[string]any)["url"] = "ftp://x" }), "nodes[4].config.url"},
		{"edge to nowhere", mutate(func(w map[string]any) { w["edges"].([]any)[0].(map[string]any)["to"] = "ghost" }), "edges[0].to"},
		{"missing branch", mutate(func(w map[string]any) { delete(w["edges"].([]any)[3].(map[string]any), "branch") }), "edges[3].branch"},
		{"bad expression", mutate(func(w map[string]any) { node(w, 3)["config"].(map[string]any)["expression"] = "1 +* 2" }), "nodes[3].config.expression"},
		{"cycle", mutate(func(w map[string]any) {
			w["edges"] = append(w["edges"].([]any), map[string]any{"from": "out", "to": "in"})
		}), "edges"},
		{"bad operator", mutate(func(w map[string]any) {
			node(w, 5)["config"] = map[string]any{"operation": "find", "collection": "tickets", "filter": map[string]any{"age": map[string]any{"$where": "1"}}}
		}), "nodes[5].config.filter.age.$where"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res := b.call(t, "POST", "/api/workflows", u.Token, tc.body)
			require.Equal(t, 400, res.Status, string(res.Raw))
			e := res.Body["error"].(map[string]any)
			require.Equal(t, "validation_failed", e["code"])
			var paths []string
			for _, d := range e["details"].([]any) {
				paths = append(paths, d.(map[string]any)["path"].(string))
			}
			found := false
			for _, p := range paths {
				if p == tc.path || (tc.path == "edges" && len(p) >= 5 && p[:5] == "edges") {
					found = true
				}
			}
			require.True(t, found, "want path %q in %v", tc.path, paths)
		})
	}
}

func TestConcurrentUpdatesAllLand(t *testing.T) {
	t.Parallel()
	b := setup(t)
	u := b.register(t)
	id := b.call(t, "POST", "/api/workflows", u.Token, smallWorkflow("v")).Body["id"].(string)
	var wg sync.WaitGroup
	for i := 0; i < 6; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res := b.call(t, "PUT", "/api/workflows/"+id, u.Token, smallWorkflow(fmt.Sprintf("v%d", i)))
			require.Equal(t, 200, res.Status, string(res.Raw))
		}()
	}
	wg.Wait()
	require.EqualValues(t, 7, b.call(t, "GET", "/api/workflows/"+id, u.Token, nil).Body["version"])
}
