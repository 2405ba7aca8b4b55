package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/weftdev/weft/events"
	"github.com/weftdev/weft/events/natstest"
	"github.com/weftdev/weft/ingress"
	"github.com/weftdev/weft/persistence"
)

// seedWorkflow is the benchmark's shape: INPUT → TRANSFORM → CONDITION →
// TRANSFORM (either branch) → OUTPUT.
func seedWorkflow() map[string]any {
	return map[string]any{
		"name": "seed",
		"nodes": []any{
			map[string]any{"id": "in", "type": "INPUT", "config": map[string]any{"fields": map[string]any{"text": map[string]any{"type": "string", "required": true}, "n": map[string]any{"type": "number", "default": 2}}}},
			map[string]any{"id": "shape", "type": "TRANSFORM", "config": map[string]any{"set": map[string]any{"upper": "upper(input.text)", "double": "input.n * 2"}}},
			map[string]any{"id": "big", "type": "CONDITION", "config": map[string]any{"expression": "nodes.shape.output.double > 10"}},
			map[string]any{"id": "yes", "type": "TRANSFORM", "config": map[string]any{"set": map[string]any{"verdict": "'big ' + nodes.shape.output.upper"}}},
			map[string]any{"id": "no", "type": "TRANSFORM", "config": map[string]any{"set": map[string]any{"verdict": "'small ' + nodes.shape.output.upper"}}},
			map[string]any{"id": "out", "type": "OUTPUT", "config": map[string]any{"value": map[string]any{"verdict": "{{ nodes.yes.output?.verdict ?? nodes.no.output?.verdict }}", "n": "{{ input.n }}"}}},
		},
		"edges": []any{
			map[string]any{"from": "in", "to": "shape"}, map[string]any{"from": "shape", "to": "big"},
			map[string]any{"from": "big", "to": "yes", "branch": "true"}, map[string]any{"from": "big", "to": "no", "branch": "false"},
			map[string]any{"from": "yes", "to": "out"}, map[string]any{"from": "no", "to": "out"},
		},
	}
}

func (b *bundle) workflow(t *testing.T, u user, def map[string]any) string {
	t.Helper()
	res := b.call(t, "POST", "/api/workflows", u.Token, def)
	require.Equal(t, 201, res.Status, string(res.Raw))
	return res.Body["id"].(string)
}

func nodeStatus(t *testing.T, ex map[string]any, id string) string {
	t.Helper()
	n, ok := ex["nodes"].(map[string]any)[id].(map[string]any)
	require.True(t, ok, "node %s in %v", id, ex["nodes"])
	return n["status"].(string)
}

func TestExecutionRunsAndWaits(t *testing.T) {
	t.Parallel()
	for _, hop := range []bool{false, true} {
		name := "inline"
		if hop {
			name = "hop-per-node"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, func(c *Config) { c.HopPerNode = hop })
			u := b.register(t)
			wf := b.workflow(t, u, seedWorkflow())

			res := b.call(t, "POST", "/api/executions?wait=10s", u.Token, map[string]any{"workflowId": wf, "inputs": map[string]any{"text": "hi", "n": 7}})
			require.Equal(t, 200, res.Status, string(res.Raw))
			require.Equal(t, "completed", res.Body["status"], string(res.Raw))
			require.Equal(t, map[string]any{"verdict": "big HI", "n": 7.0}, res.Body["output"])
			require.EqualValues(t, 1, res.Body["workflowVersion"])
			require.Equal(t, "completed", nodeStatus(t, res.Body, "yes"))
			require.Equal(t, "skipped", nodeStatus(t, res.Body, "no"))
			require.Nil(t, res.Body["error"])
			require.NotNil(t, res.Body["durationMs"])

			// The default of n applies, and the other branch runs.
			res = b.call(t, "POST", "/api/executions?wait=10s", u.Token, map[string]any{"workflowId": wf, "inputs": map[string]any{"text": "hi"}})
			require.Equal(t, 200, res.Status, string(res.Raw))
			require.Equal(t, map[string]any{"verdict": "small HI", "n": 2.0}, res.Body["output"])
			require.Equal(t, "skipped", nodeStatus(t, res.Body, "yes"))

			// GET serves the same execution.
			got := b.call(t, "GET", "/api/executions/"+res.Body["id"].(string), u.Token, nil)
			require.Equal(t, 200, got.Status)
			require.Equal(t, "completed", got.Body["status"])
			require.Equal(t, res.Body["output"], got.Body["output"])
		})
	}
}

func TestExecutionSubmitThenPoll(t *testing.T) {
	t.Parallel()
	b := setup(t)
	u := b.register(t)
	wf := b.workflow(t, u, seedWorkflow())
	id := b.submit(t, u, wf, "poll")
	require.Eventually(t, func() bool {
		got := b.call(t, "GET", "/api/executions/"+id, u.Token, nil)
		return got.Status == 200 && got.Body["status"] == "completed"
	}, 10*time.Second, 20*time.Millisecond)

	list := b.call(t, "GET", "/api/executions?workflowId="+wf+"&status=completed", u.Token, nil)
	require.Equal(t, 200, list.Status)
	require.Len(t, list.Body["items"], 1)
	requireError(t, b.call(t, "GET", "/api/executions?status=bogus", u.Token, nil), 400, "validation_failed", "status")

	// Another user sees nothing of it.
	other := b.register(t)
	requireError(t, b.call(t, "GET", "/api/executions/"+id, other.Token, nil), 404, "not_found", "-")
	requireError(t, b.call(t, "POST", "/api/executions/"+id+"/cancel", other.Token, nil), 404, "not_found", "-")
	require.Empty(t, b.call(t, "GET", "/api/executions", other.Token, nil).Body["items"])
	requireError(t, b.call(t, "POST", "/api/executions", other.Token, map[string]any{"workflowId": wf, "inputs": map[string]any{"text": "x"}}), 404, "not_found", "-")
}

func TestExecutionInputsAreChecked(t *testing.T) {
	t.Parallel()
	b := setup(t)
	u := b.register(t)
	wf := b.workflow(t, u, seedWorkflow())
	requireError(t, b.call(t, "POST", "/api/executions", u.Token, map[string]any{"workflowId": wf, "inputs": map[string]any{}}), 400, "validation_failed", "inputs.text")
	requireError(t, b.call(t, "POST", "/api/executions", u.Token, map[string]any{"workflowId": wf, "inputs": map[string]any{"text": 5}}), 400, "validation_failed", "inputs.text")
	requireError(t, b.call(t, "POST", "/api/executions", u.Token, map[string]any{"inputs": map[string]any{}}), 400, "validation_failed", "workflowId")
	requireError(t, b.call(t, "POST", "/api/executions", u.Token, map[string]any{"workflowId": wf, "inputs": "nope"}), 400, "validation_failed", "inputs")
	requireError(t, b.call(t, "POST", "/api/executions?wait=forever", u.Token, map[string]any{"workflowId": wf, "inputs": map[string]any{"text": "x"}}), 400, "validation_failed", "wait")
}

func TestIdempotencyKey(t *testing.T) {
	t.Parallel()
	b := setup(t)
	u := b.register(t)
	wf := b.workflow(t, u, seedWorkflow())
	body := map[string]any{"workflowId": wf, "inputs": map[string]any{"text": "once"}}
	first := b.call(t, "POST", "/api/executions?wait=5s", u.Token, body, "Idempotency-Key", "order-42")
	require.Equal(t, 200, first.Status, string(first.Raw))
	second := b.call(t, "POST", "/api/executions", u.Token, body, "Idempotency-Key", "order-42")
	require.Equal(t, first.Body["id"], second.Body["id"])
	list := b.call(t, "GET", "/api/executions?workflowId="+wf, u.Token, nil)
	require.Len(t, list.Body["items"], 1)

	// The same key for another request is the client's mistake: refused,
	// not answered with the first execution as if it were this one's.
	other := map[string]any{"workflowId": wf, "inputs": map[string]any{"text": "twice"}}
	requireError(t, b.call(t, "POST", "/api/executions", u.Token, other, "Idempotency-Key", "order-42"), 409, "conflict", "-")
	// Another user's same key is theirs alone.
	v := b.register(t)
	vwf := b.workflow(t, v, seedWorkflow())
	res := b.call(t, "POST", "/api/executions?wait=5s", v.Token, map[string]any{"workflowId": vwf, "inputs": map[string]any{"text": "once"}}, "Idempotency-Key", "order-42")
	require.Equal(t, 200, res.Status, string(res.Raw))
	require.NotEqual(t, first.Body["id"], res.Body["id"])
}

// TestCancelQueued cancels an execution no worker has started: it ends
// cancelled, and a worker that comes later does not run it.
func TestCancelQueued(t *testing.T) {
	t.Parallel()
	api := setup(t)
	u := api.register(t)
	wf := api.workflow(t, u, seedWorkflow())
	// With the engine stopped, nothing starts the execution.
	api.main.engine.Stop()
	id := api.submit(t, u, wf, "stop")
	cancelled := api.call(t, "POST", "/api/executions/"+id+"/cancel", u.Token, nil)
	require.Equal(t, 200, cancelled.Status, string(cancelled.Raw))
	require.Equal(t, "cancelled", cancelled.Body["status"])
	require.Equal(t, "cancelled", nodeStatus(t, cancelled.Body, "in"))
	requireError(t, api.call(t, "POST", "/api/executions/"+id+"/cancel", u.Token, nil), 409, "conflict", "-")

	// A worker starting now finds it cancelled and runs nothing.
	require.NoError(t, api.main.engine.Start(context.Background(), []string{"INPUT", "TRANSFORM", "CONDITION", "OUTPUT"}))
	t.Cleanup(api.main.engine.Stop)
	time.Sleep(300 * time.Millisecond)
	got := api.call(t, "GET", "/api/executions/"+id, u.Token, nil)
	require.Equal(t, "cancelled", got.Body["status"])
	require.Equal(t, "cancelled", nodeStatus(t, got.Body, "out"))
}

func TestExecutionEventsStream(t *testing.T) {
	t.Parallel()
	b := setup(t)
	u := b.register(t)
	wf := b.workflow(t, u, seedWorkflow())
	b.main.engine.Stop()
	resp := b.events(t, u.Token, b.submit(t, u, wf, "sse"))
	require.Equal(t, "text/event-stream", resp.Header.Get("Content-Type"))

	require.NoError(t, b.main.engine.Start(context.Background(), []string{"INPUT", "TRANSFORM", "CONDITION", "OUTPUT"}))
	t.Cleanup(b.main.engine.Stop)
	var kinds []string
	data := map[string]string{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if k, ok := strings.CutPrefix(sc.Text(), "event: "); ok {
			kinds = append(kinds, k)
			if k == "end" {
				break
			}
		}
		if d, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
			data[kinds[len(kinds)-1]] = d
		}
	}
	require.Equal(t, "snapshot", kinds[0])
	require.Equal(t, []string{"completed", "end"}, kinds[len(kinds)-2:], "one terminal event, then the end: %v", kinds)
	// The terminal event carries the whole execution.
	var end struct {
		Kind      string `json:"kind"`
		Execution struct {
			Status string         `json:"status"`
			Output map[string]any `json:"output"`
			Nodes  map[string]any `json:"nodes"`
		} `json:"execution"`
	}
	require.NoError(t, json.Unmarshal([]byte(data["completed"]), &end), data["completed"])
	require.Equal(t, "completed", end.Kind)
	require.Equal(t, "completed", end.Execution.Status)
	require.NotEmpty(t, end.Execution.Output)
	require.Len(t, end.Execution.Nodes, 6)
}

// TestEventsStreamEndsWhenItsEndIsMissed: an end the stream never
// received (dropped for a slow client) is found in the store at the next
// heartbeat, and the stream ends instead of idling forever.
func TestEventsStreamEndsWhenItsEndIsMissed(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *Config) { c.SSEHeartbeat = 100 * time.Millisecond })
	u := b.register(t)
	wf := b.workflow(t, u, seedWorkflow())
	b.main.engine.Stop()
	id := b.submit(t, u, wf, "sse")
	resp := b.events(t, u.Token, id)

	// Ended behind the stream's back: recorded, never announced.
	_, err := b.main.store.ApplyExecution(context.Background(), persistence.ExecutionUpdate{ID: id,
		Finish: &persistence.Finish{Status: persistence.StatusCancelled, At: time.Now()}})
	require.NoError(t, err)
	start := time.Now()
	var lines []string
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if sc.Text() == "event: end" && sc.Scan() {
			lines = append(lines, sc.Text())
			break
		}
	}
	require.Equal(t, `data: {"status":"cancelled"}`, lines[len(lines)-1], strings.Join(lines, "\n"))
	require.Less(t, time.Since(start), 5*time.Second)
}

// TestEventsStreamTerminalEventBeforeResult: a terminal event that comes
// before its result (which travels on another connection when it was
// handed over in process) is sent with the execution, read from the store.
func TestEventsStreamTerminalEventBeforeResult(t *testing.T) {
	t.Parallel()
	b := setup(t)
	u := b.register(t)
	wf := b.workflow(t, u, seedWorkflow())
	b.main.engine.Stop()
	id := b.submit(t, u, wf, "sse")
	resp := b.events(t, u.Token, id)

	// Ended and announced by its event alone, no result.
	ctx := context.Background()
	at := time.Now().UTC()
	_, err := b.main.store.ApplyExecution(ctx, persistence.ExecutionUpdate{ID: id, Start: &at,
		Finish: &persistence.Finish{Status: persistence.StatusCompleted, At: at, Output: []byte(`{"verdict":"small"}`)}})
	require.NoError(t, err)
	data, err := json.Marshal(events.Event{ExecutionID: id, Kind: events.KindCompleted, At: at})
	require.NoError(t, err)
	msg := nats.NewMsg(events.EventSubject(id, events.KindCompleted))
	msg.Data = data
	msg.Header.Set(events.HeaderMsgID, id+".completed")
	_, err = b.main.js.PublishMsg(ctx, msg)
	require.NoError(t, err)

	var completed string
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if sc.Text() == "event: completed" && sc.Scan() {
			completed = strings.TrimPrefix(sc.Text(), "data: ")
			break
		}
	}
	var end struct {
		Kind      string `json:"kind"`
		Execution struct {
			ID     string         `json:"id"`
			Status string         `json:"status"`
			Output map[string]any `json:"output"`
		} `json:"execution"`
	}
	require.NoError(t, json.Unmarshal([]byte(completed), &end), completed)
	require.Equal(t, "completed", end.Kind)
	require.Equal(t, id, end.Execution.ID)
	require.Equal(t, "completed", end.Execution.Status)
	require.Equal(t, map[string]any{"verdict": "small"}, end.Execution.Output)
}

// submit starts an execution of the seed workflow without waiting: it is
// accepted as queued, and its id returned.
func (b *bundle) submit(t *testing.T, u user, wf, text string) string {
	t.Helper()
	res := b.call(t, "POST", "/api/executions", u.Token, map[string]any{"workflowId": wf, "inputs": map[string]any{"text": text}})
	require.Equal(t, 202, res.Status, string(res.Raw))
	require.Equal(t, "queued", res.Body["status"])
	return res.Body["id"].(string)
}

// events opens an execution's event stream (SSE).
func (b *bundle) events(t *testing.T, token, id string) *http.Response {
	t.Helper()
	req, err := http.NewRequest("GET", b.url+"/api/executions/"+id+"/events", nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	t.Cleanup(func() { _ = resp.Body.Close() })
	return resp
}

// natsClient connects to the dev process's NATS as a direct publisher would.
func natsClient(t *testing.T, b *bundle) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	return natstest.Connect(t, b.main.NATSURL)
}

func TestDirectNATSSubmission(t *testing.T) {
	t.Parallel()
	b := setup(t)
	u := b.register(t)
	wf := b.workflow(t, u, seedWorkflow())
	key := b.call(t, "POST", "/api/auth/api-keys", u.Token, map[string]any{"name": "nats"}).Body["key"].(string)
	nc, js := natsClient(t, b)
	ctx := context.Background()

	publish := func(body string, headers map[string]string) *jetstream.PubAck {
		m := nats.NewMsg("weft.executions.submit")
		m.Data = []byte(body)
		for k, v := range headers {
			m.Header.Set(k, v)
		}
		ack, err := js.PublishMsg(ctx, m)
		require.NoError(t, err)
		return ack
	}
	// An execution id of the caller's choosing; resent, it is one execution.
	body := `{"workflowId":"` + wf + `","inputs":{"text":"direct","n":9},"executionId":"order-1"}`
	publish(body, map[string]string{"Weft-Api-Key": key, "Nats-Msg-Id": "m-1"})
	dup := publish(body, map[string]string{"Weft-Api-Key": key, "Nats-Msg-Id": "m-1"})
	require.True(t, dup.Duplicate)
	publish(body, map[string]string{"Authorization": "Bearer " + key, "Nats-Msg-Id": "m-2"})
	require.Eventually(t, func() bool {
		got := b.call(t, "GET", "/api/executions/order-1", u.Token, nil)
		return got.Status == 200 && got.Body["status"] == "completed"
	}, 10*time.Second, 20*time.Millisecond)
	got := b.call(t, "GET", "/api/executions/order-1", u.Token, nil)
	require.Equal(t, map[string]any{"verdict": "big DIRECT", "n": 9.0}, got.Body["output"])
	require.Len(t, b.call(t, "GET", "/api/executions", u.Token, nil).Body["items"], 1)

	// Refused requests are kept for inspection, with their reason, and
	// never retried.
	publish(`{"workflowId":`, map[string]string{"Weft-Api-Key": key})
	publish(`{"workflowId":"`+wf+`","inputs":{"text":"x"}}`, map[string]string{"Weft-Api-Key": "weft_wrong"})
	publish(`{"workflowId":"`+wf+`","inputs":{"text":"x"}}`, nil)
	publish(`{"workflowId":"`+wf+`","inputs":{}}`, map[string]string{"Weft-Api-Key": key})
	rejected, err := js.Stream(ctx, "WEFT_REJECTED")
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		info, err := rejected.Info(ctx)
		return err == nil && info.State.Msgs == 4
	}, 10*time.Second, 20*time.Millisecond)
	var reasons []string
	for seq := uint64(1); seq <= 4; seq++ {
		m, err := rejected.GetMsg(ctx, seq)
		require.NoError(t, err)
		require.Empty(t, m.Header.Get("Weft-Api-Key"), "credentials are never kept")
		var why map[string]any
		require.NoError(t, json.Unmarshal([]byte(m.Header.Get("Weft-Reason")), &why))
		reasons = append(reasons, why["code"].(string))
	}
	require.ElementsMatch(t, []string{"validation_failed", "unauthorized", "unauthorized", "validation_failed"}, reasons)
	submit, err := js.Stream(ctx, "WEFT_SUBMIT")
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		info, err := submit.Info(ctx)
		return err == nil && info.State.Msgs == 0
	}, 5*time.Second, 20*time.Millisecond, "nothing left to redeliver")

	// weft.executions.run answers with the finished execution.
	m := nats.NewMsg("weft.executions.run")
	m.Data = []byte(`{"workflowId":"` + wf + `","inputs":{"text":"run"}}`)
	m.Header.Set("Weft-Api-Key", key)
	reply, err := nc.RequestMsg(m, 10*time.Second)
	require.NoError(t, err)
	var ex map[string]any
	require.NoError(t, json.Unmarshal(reply.Data, &ex))
	require.Equal(t, "completed", ex["status"], string(reply.Data))
	require.Equal(t, map[string]any{"verdict": "small RUN", "n": 2.0}, ex["output"])

	m.Header.Set("Weft-Api-Key", "weft_wrong")
	reply, err = nc.RequestMsg(m, 10*time.Second)
	require.NoError(t, err)
	require.Contains(t, string(reply.Data), `"code":"unauthorized"`)
}

// TestUpdatedWorkflowRunsEverywhere: a process that cached a workflow runs
// the new version as soon as another process saved it.
func TestUpdatedWorkflowRunsEverywhere(t *testing.T) {
	t.Parallel()
	a := setup(t)
	b := setup(t, func(c *Config) {
		c.DataDir = a.dir
		c.NATSURL = a.main.NATSURL
		c.RedisURL = a.main.RedisURL
		c.RedisPrefix = a.main.Config.RedisPrefix
		c.Roles = []string{"ingress"}
		c.Mode = ModeDev
	})
	u := a.register(t)
	wf := a.workflow(t, u, seedWorkflow())
	run := func(bd *bundle) map[string]any {
		res := bd.call(t, "POST", "/api/executions?wait=10s", u.Token, map[string]any{"workflowId": wf, "inputs": map[string]any{"text": "v"}})
		require.Equal(t, 200, res.Status, string(res.Raw))
		return res.Body
	}
	require.EqualValues(t, 1, run(b)["workflowVersion"])
	require.Equal(t, 200, a.call(t, "PUT", "/api/workflows/"+wf, u.Token, seedWorkflow()).Status)
	require.Eventually(t, func() bool { return run(b)["workflowVersion"] == 2.0 }, 5*time.Second, 50*time.Millisecond)
	require.Equal(t, 204, a.call(t, "DELETE", "/api/workflows/"+wf, u.Token, nil).Status)
	require.Eventually(t, func() bool {
		res := b.call(t, "POST", "/api/executions", u.Token, map[string]any{"workflowId": wf, "inputs": map[string]any{"text": "v"}})
		return res.Status == 404
	}, 5*time.Second, 50*time.Millisecond)
}

// TestAINodeWithoutProvidersFailsClearly: with no provider key set, an
// AI node fails its execution at once with a code that says so, instead
// of retrying or waiting forever.
func TestAINodeWithoutProvidersFailsClearly(t *testing.T) {
	t.Parallel()
	b := setup(t)
	u := b.register(t)
	res := b.call(t, "POST", "/api/executions?wait=10s", u.Token, map[string]any{"workflowId": b.workflow(t, u, exampleWorkflow()), "inputs": map[string]any{"text": "x"}})
	require.Equal(t, 200, res.Status, string(res.Raw))
	require.Equal(t, "failed", res.Body["status"])
	require.Equal(t, "ai_not_configured", res.Body["error"].(map[string]any)["code"])
	require.Equal(t, "mood", res.Body["error"].(map[string]any)["nodeId"])
	require.Equal(t, "cancelled", nodeStatus(t, res.Body, "out"))
}

// TestOnErrorAndMergedOutputs: a failing node with onError "continue" lets
// the execution go on (its status is readable downstream), several OUTPUT
// nodes merge by id; without "continue" the execution fails and what had
// not run is cancelled.
func TestOnErrorAndMergedOutputs(t *testing.T) {
	t.Parallel()
	b := setup(t)
	u := b.register(t)
	def := func(onError string) map[string]any {
		bad := map[string]any{"set": map[string]any{"v": "int(input.text)"}}
		if onError != "" {
			bad["onError"] = onError
		}
		return map[string]any{
			"name": "merge",
			"nodes": []any{
				map[string]any{"id": "in", "type": "INPUT"},
				map[string]any{"id": "bad", "type": "TRANSFORM", "config": bad},
				map[string]any{"id": "a", "type": "OUTPUT", "config": map[string]any{"value": "{{ nodes.bad.status }}"}},
				map[string]any{"id": "b", "type": "OUTPUT", "config": map[string]any{"value": map[string]any{"text": "{{ input.text }}"}}},
			},
			"edges": []any{
				map[string]any{"from": "in", "to": "bad"}, map[string]any{"from": "bad", "to": "a"}, map[string]any{"from": "in", "to": "b"},
			},
		}
	}
	res := b.call(t, "POST", "/api/executions?wait=10s", u.Token, map[string]any{"workflowId": b.workflow(t, u, def("continue")), "inputs": map[string]any{"text": "abc"}})
	require.Equal(t, 200, res.Status, string(res.Raw))
	require.Equal(t, "completed", res.Body["status"], string(res.Raw))
	require.Equal(t, map[string]any{"a": "failed", "b": map[string]any{"text": "abc"}}, res.Body["output"])
	bad := res.Body["nodes"].(map[string]any)["bad"].(map[string]any)
	require.Equal(t, "failed", bad["status"])
	require.Equal(t, "expression_error", bad["error"].(map[string]any)["code"])

	res = b.call(t, "POST", "/api/executions?wait=10s", u.Token, map[string]any{"workflowId": b.workflow(t, u, def("")), "inputs": map[string]any{"text": "abc"}})
	require.Equal(t, 200, res.Status, string(res.Raw))
	require.Equal(t, "failed", res.Body["status"])
	e := res.Body["error"].(map[string]any)
	require.Equal(t, "bad", e["nodeId"])
	require.Equal(t, "expression_error", e["code"])
	require.NotEmpty(t, e["message"])
	require.Equal(t, "cancelled", nodeStatus(t, res.Body, "a"))
	id := res.Body["id"].(string)
	logs := b.call(t, "GET", "/api/executions/"+id+"/logs", u.Token, nil)
	require.Equal(t, 200, logs.Status)
	require.NotEmpty(t, logs.Body["items"])
}

// TestDirectNATSEdges: header names in any case, an execution id taken by
// another user is refused without touching that execution, and run
// requests are served concurrently.
func TestDirectNATSEdges(t *testing.T) {
	t.Parallel()
	b := setup(t)
	owner, intruder := b.register(t), b.register(t)
	wf := b.workflow(t, owner, seedWorkflow())
	ownerKey := b.call(t, "POST", "/api/auth/api-keys", owner.Token, map[string]any{"name": "k"}).Body["key"].(string)
	intruderKey := b.call(t, "POST", "/api/auth/api-keys", intruder.Token, map[string]any{"name": "k"}).Body["key"].(string)
	nc, js := natsClient(t, b)
	ctx := context.Background()

	m := nats.NewMsg("weft.executions.submit")
	m.Data = []byte(`{"workflowId":"` + wf + `","inputs":{"text":"mine"},"executionId":"taken-1"}`)
	m.Header["weft-api-key"] = []string{ownerKey} // lower case, as some clients write it
	_, err := js.PublishMsg(ctx, m)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		return b.call(t, "GET", "/api/executions/taken-1", owner.Token, nil).Body["status"] == "completed"
	}, 10*time.Second, 20*time.Millisecond)

	// The intruder names the owner's execution: refused, kept, and the
	// owner's execution is as it was.
	m = nats.NewMsg("weft.executions.submit")
	m.Data = []byte(`{"workflowId":"` + wf + `","inputs":{"text":"theirs"},"executionId":"taken-1"}`)
	m.Header.Set("Weft-Api-Key", intruderKey)
	m.Header.Set("Nats-Msg-Id", "intrude")
	_, err = js.PublishMsg(ctx, m)
	require.NoError(t, err)
	rejected, err := js.Stream(ctx, "WEFT_REJECTED")
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		info, err := rejected.Info(ctx)
		return err == nil && info.State.Msgs == 1
	}, 10*time.Second, 20*time.Millisecond)
	got := b.call(t, "GET", "/api/executions/taken-1", owner.Token, nil)
	require.Equal(t, "completed", got.Body["status"])
	require.Equal(t, map[string]any{"verdict": "small MINE", "n": 2.0}, got.Body["output"])
	requireError(t, b.call(t, "GET", "/api/executions/taken-1", intruder.Token, nil), 404, "not_found", "-")

	// Run requests in parallel are answered in parallel.
	var wg sync.WaitGroup
	began := time.Now()
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req := nats.NewMsg("weft.executions.run")
			req.Data = []byte(fmt.Sprintf(`{"workflowId":"%s","inputs":{"text":"r%d"},"executionId":"run-%d"}`, wf, i, i))
			req.Header.Set("Weft-Api-Key", ownerKey)
			reply, err := nc.RequestMsg(req, 10*time.Second)
			require.NoError(t, err)
			var ex map[string]any
			require.NoError(t, json.Unmarshal(reply.Data, &ex))
			require.Equal(t, "completed", ex["status"], string(reply.Data))
			require.Equal(t, fmt.Sprintf("run-%d", i), ex["id"])
		}()
	}
	wg.Wait()
	require.Less(t, time.Since(began), 10*time.Second)
}

// TestAWaitThatRunsOutIsRecorded: a waited-for execution is recorded by
// its starter, not by the API, unless the wait runs out: then the 202
// goes out only once the execution can be read, whether a starter has
// reached it (a slow node) or not (no starter running at all).
func TestAWaitThatRunsOutIsRecorded(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(srv.Close)
	slow := map[string]any{
		"name": "slow",
		"nodes": []any{
			map[string]any{"id": "in", "type": "INPUT"},
			map[string]any{"id": "call", "type": "HTTP_REQUEST", "config": map[string]any{"url": srv.URL, "timeoutMs": 60000}},
		},
		"edges": []any{map[string]any{"from": "in", "to": "call"}},
	}
	a := setup(t)
	idle := setup(t, func(c *Config) { c.Roles = []string{"ingress"} }) // nothing starts its executions
	t.Cleanup(func() { close(release) })                                // before the engines stop
	for _, b := range []*bundle{a, idle} {
		u := b.register(t)
		wf := b.workflow(t, u, slow)
		res := b.call(t, "POST", "/api/executions?wait=200ms", u.Token, map[string]any{"workflowId": wf, "inputs": map[string]any{}})
		require.Equal(t, 202, res.Status, string(res.Raw))
		require.Equal(t, "queued", res.Body["status"])
		got := b.call(t, "GET", "/api/executions/"+res.Body["id"].(string), u.Token, nil)
		require.Equal(t, 200, got.Status, string(got.Raw))
		require.Contains(t, []any{"queued", "running"}, got.Body["status"])
		if b == idle {
			require.Equal(t, "queued", got.Body["status"])
		}
	}
}

// TestResultsHandedOverInProcess: a process with both the ingress and the
// workers gives its waiters the results of the executions it ends in
// process; its ingress stops taking them when it shuts down. A process
// without the ingress has nobody to hand them to.
func TestResultsHandedOverInProcess(t *testing.T) {
	b := setup(t)
	require.True(t, b.main.results.Receiving())
	require.NotNil(t, b.main.results.Conn(), "both roles: results go out without echo")
	natsCheck := func(m *Main) ingress.Check {
		i := slices.IndexFunc(m.readiness(), func(c ingress.Check) bool { return c.Name == "nats" })
		require.GreaterOrEqual(t, i, 0)
		return m.readiness()[i]
	}
	require.NoError(t, natsCheck(b.main).Ping(context.Background()))
	b.main.results.Conn().Close()
	require.Error(t, natsCheck(b.main).Ping(context.Background()), "/readyz's nats check pings the results connection too")
	b.main.Close()
	require.False(t, b.main.results.Receiving())

	workersOnly := setup(t, func(c *Config) { c.Roles = []string{"workers", "projector"} })
	require.False(t, workersOnly.main.results.Receiving())
	require.Nil(t, workersOnly.main.results.Conn())
	require.NoError(t, natsCheck(workersOnly.main).Ping(context.Background()))
}
