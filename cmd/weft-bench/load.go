package main

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	json "github.com/goccy/go-json"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// result is one phase's figures.
type result struct {
	name     string
	ok       int             // executions that completed as expected
	errors   map[string]int  // the others, by reason
	elapsed  time.Duration   // first submission to last answer
	steps    int             // nodes run per execution
	lat      []time.Duration // end-to-end latency of the ok ones, sorted
	rss, hwm float64         // engine VmRSS and VmHWM at the phase's end, MB
	skipped  bool
	// What the engine spent on the phase, per execution: CPU time, and
	// bytes allocated (0 when unknown); the CPU time the load generator
	// spent; and the share of the machine's CPU time the hypervisor
	// gave to others (steal), which slows both.
	cpuPerExec   time.Duration
	allocPerExec float64
	genPerExec   time.Duration
	steal        float64
}

// setCost sets the phase's cost per execution from the engine's usage
// before and after it.
func (r *result) setCost(before, after usage) {
	if r.ok == 0 {
		return
	}
	r.cpuPerExec = (after.cpu - before.cpu) / time.Duration(r.ok)
	r.genPerExec = (after.gen - before.gen) / time.Duration(r.ok)
	if total := after.total - before.total; total > 0 {
		r.steal = float64(after.steal-before.steal) / float64(total)
	}
	if before.alloc > 0 && after.alloc > before.alloc {
		r.allocPerExec = (after.alloc - before.alloc) / float64(r.ok)
	}
}

func (r *result) errorCount() int {
	n := 0
	for _, v := range r.errors {
		n += v
	}
	return n
}

func (r *result) execRate() float64 {
	if r.elapsed <= 0 {
		return 0
	}
	return float64(r.ok) / r.elapsed.Seconds()
}

func (r *result) stepRate() float64 { return r.execRate() * float64(r.steps) }

// pct is the nearest-rank percentile of the sorted latencies.
func (r *result) pct(p float64) time.Duration {
	if len(r.lat) == 0 {
		return 0
	}
	i := int(float64(len(r.lat))*p/100+0.999999) - 1
	return r.lat[min(max(i, 0), len(r.lat)-1)]
}

// errorSummary lists the reasons, most frequent first.
func (r *result) errorSummary() string {
	keys := slices.Collect(maps.Keys(r.errors))
	sort.Slice(keys, func(i, j int) bool { return r.errors[keys[i]] > r.errors[keys[j]] })
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%d× %s", r.errors[k], k))
	}
	return strings.Join(parts, "; ")
}

// tally collects outcomes from concurrent workers.
type tally struct {
	mu     sync.Mutex
	ok     atomic.Int64
	failed atomic.Int64
	lat    []time.Duration
	errors map[string]int
	last   time.Time
}

func newTally() *tally { return &tally{errors: map[string]int{}} }

func (t *tally) success(d time.Duration, at time.Time) {
	t.ok.Add(1)
	t.mu.Lock()
	t.lat = append(t.lat, d)
	if at.After(t.last) {
		t.last = at
	}
	t.mu.Unlock()
}

func (t *tally) fail(reason string, at time.Time) {
	t.failed.Add(1)
	t.mu.Lock()
	t.errors[reason]++
	if at.After(t.last) {
		t.last = at
	}
	t.mu.Unlock()
}

func (t *tally) result(name string, steps int, start time.Time) result {
	t.mu.Lock()
	defer t.mu.Unlock()
	lat := slices.Clone(t.lat)
	slices.Sort(lat)
	end := t.last
	if end.IsZero() {
		end = time.Now()
	}
	return result{name: name, ok: int(t.ok.Load()), errors: maps.Clone(t.errors), elapsed: end.Sub(start), steps: steps, lat: lat}
}

// progress prints a line every interval until stop is closed.
func progress(name string, every time.Duration, t *tally, extra func() string, stop <-chan struct{}) {
	tick := time.NewTicker(every)
	defer tick.Stop()
	start := time.Now()
	var prev int64
	for {
		select {
		case <-stop:
			return
		case <-tick.C:
			ok := t.ok.Load()
			fmt.Printf("  %-14s t=%-5s %8d ok  %7.0f/s now  %d errors%s\n", name,
				time.Since(start).Round(time.Second), ok, float64(ok-prev)/every.Seconds(), t.failed.Load(), extra())
			prev = ok
		}
	}
}

// execution is what the checks need of an execution answer.
type execution struct {
	ID     string         `json:"id"`
	Status string         `json:"status"`
	Output map[string]any `json:"output"`
	Error  *struct {
		NodeID  string `json:"nodeId"`
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
	Nodes map[string]struct {
		Status string `json:"status"`
	} `json:"nodes"`
}

// checkSeed verifies one answer of the seed workflow against what its
// inputs must give.
func checkSeed(e *execution, text string, n int) string {
	if e.Status != "completed" {
		if e.Error != nil {
			return fmt.Sprintf("execution %s: %s at %s", e.Status, e.Error.Code, e.Error.NodeID)
		}
		return "execution " + e.Status
	}
	var done, skipped int
	for _, nd := range e.Nodes {
		switch nd.Status {
		case "completed":
			done++
		case "skipped":
			skipped++
		}
	}
	if done != seedNodesRun || skipped != 1 {
		return fmt.Sprintf("completed with %d nodes run and %d skipped, want 5 and 1", done, skipped)
	}
	want := "small"
	if n*2 > 10 {
		want = "big"
	}
	if e.Output["verdict"] != want || e.Output["upper"] != strings.ToUpper(text) {
		return "completed with a wrong output"
	}
	return ""
}

// checkDiamondEvent verifies the execution a completed result carries, when
// it carries one: ten nodes completed, each TRANSFORM's value in the output.
func checkDiamondEvent(data []byte, x int) string {
	var ev struct {
		Execution *execution `json:"execution"`
	}
	if err := json.Unmarshal(data, &ev); err != nil {
		return "completed event with an undecodable body"
	}
	e := ev.Execution
	if e == nil {
		return ""
	}
	if e.Status != "completed" {
		return "completed event whose execution is " + e.Status
	}
	done := 0
	for _, nd := range e.Nodes {
		if nd.Status == "completed" {
			done++
		}
	}
	if len(e.Nodes) > 0 && done != diamondNodes {
		return fmt.Sprintf("completed with %d nodes run, want %d", done, diamondNodes)
	}
	for k := 1; k <= 8; k++ {
		if v, ok := e.Output[fmt.Sprintf("t%d", k)].(float64); !ok || v != float64(x*k+4) {
			return "completed with a wrong output"
		}
	}
	return ""
}

// seedBody appends the request body of one seed execution to b, as
// encoding {"workflowId": id, "inputs": {"text": text, "n": n}} would,
// but without an encoder's cost on the machine the engine runs on: id is
// a ULID and text plain ASCII, with nothing to escape.
func seedBody(b []byte, id, text string, n int) []byte {
	b = append(b, `{"workflowId":"`...)
	b = append(b, id...)
	b = append(b, `","inputs":{"text":"`...)
	b = append(b, text...)
	b = append(b, `","n":`...)
	b = strconv.AppendInt(b, int64(n), 10)
	return append(b, "}}"...)
}

// httpLoad submits the seed workflow with ?wait=5s from conc workers for
// dur or until maxReq requests were sent (0: no limit).
func httpLoad(ctx context.Context, c *client, s setup, name string, conc int, dur time.Duration, maxReq int, eng *engine) result {
	t := newTally()
	var issued atomic.Int64
	ctx, cancel := context.WithTimeout(ctx, dur)
	defer cancel()
	stop := make(chan struct{})
	go progress(name, 5*time.Second, t, func() string {
		cur, _ := eng.rss()
		return fmt.Sprintf("  RSS %.0f MB", cur)
	}, stop)
	start := time.Now()
	var wg sync.WaitGroup
	for w := range conc {
		wg.Go(func() {
			var body, answer []byte
			for ctx.Err() == nil {
				i := int(issued.Add(1))
				if maxReq > 0 && i > maxReq {
					return
				}
				text := "weft bench " + strconv.Itoa(w) + " " + strconv.Itoa(i)
				n := i % 10
				body = seedBody(body[:0], s.seedID, text, n)
				t0 := time.Now()
				status, b, err := c.post("/api/executions?wait=5s", body, "X-Api-Key", s.apiKey, answer)
				answer = b
				t1 := time.Now()
				if ctx.Err() != nil {
					return // the phase's time ran out mid-request: not counted
				}
				if err != nil {
					t.fail("transport: "+err.Error(), t1)
					continue
				}
				if status != http.StatusOK {
					reason := fmt.Sprintf("HTTP %d", status)
					if status == http.StatusAccepted {
						reason += " (still running after wait=5s)"
					} else {
						reason += ": " + clip(b, 160)
					}
					t.fail(reason, t1)
					continue
				}
				var e execution
				if err := json.Unmarshal(b, &e); err != nil {
					t.fail("HTTP 200 with an undecodable body", t1)
					continue
				}
				if reason := checkSeed(&e, text, n); reason != "" {
					t.fail(reason, t1)
					continue
				}
				t.success(t1.Sub(t0), t1)
			}
		})
	}
	wg.Wait()
	close(stop)
	return t.result(name, seedNodesRun, start)
}

// natsBurst publishes n executions of the diamond straight to
// weft.executions.submit and waits for their terminal events.
func natsBurst(ctx context.Context, natsURL string, s setup, runID string, n int, timeout time.Duration, eng *engine) (result, error) {
	name := "B nats burst"
	nc, err := nats.Connect(natsURL, nats.Name("weft-bench"))
	if err != nil {
		return result{name: name}, fmt.Errorf("connect %s: %w", natsURL, err)
	}
	defer nc.Close()

	prefix := "bench-" + runID + "-"
	starts := make([]atomic.Int64, n)
	seen := make([]atomic.Bool, n)
	t := newTally()
	var terminal atomic.Int64
	all := make(chan struct{})
	base := time.Now()

	onEvent := func(m *nats.Msg) {
		at := time.Now()
		// weft.events.<executionId>.<kind>, or weft.results.<executionId>
		// (a completed or failed end, with the execution in it)
		tok := strings.Split(m.Subject, ".")
		if len(tok) == 3 && tok[1] == "results" {
			var ev struct {
				Kind string `json:"kind"`
			}
			_ = json.Unmarshal(m.Data, &ev)
			tok = append(tok, ev.Kind)
		}
		if len(tok) != 4 || !strings.HasPrefix(tok[2], prefix) {
			return
		}
		i, err := strconv.Atoi(strings.TrimPrefix(tok[2], prefix))
		if err != nil || i < 0 || i >= n || seen[i].Swap(true) {
			return
		}
		switch kind := tok[3]; kind {
		case "completed":
			if reason := checkDiamondEvent(m.Data, i); reason != "" {
				t.fail(reason, at)
				break
			}
			t.success(at.Sub(base)-time.Duration(starts[i].Load()), at)
		default:
			var ev struct {
				Error *struct {
					Code    string `json:"code"`
					Message string `json:"message"`
				} `json:"error"`
			}
			reason := "event " + kind
			if json.Unmarshal(m.Data, &ev) == nil && ev.Error != nil {
				reason += ": " + ev.Error.Code + ": " + clip([]byte(ev.Error.Message), 120)
			}
			t.fail(reason, at)
		}
		if terminal.Add(1) == int64(n) {
			close(all)
		}
	}
	// Subscribe before publishing so no end is missed; one subscription
	// per subject, no per-execution subscriptions. An execution that ran
	// ends with its result, which carries the execution to check; the
	// others with their event.
	for _, subject := range []string{"weft.results.*", "weft.events.*.cancelled", "weft.events.*.rejected"} {
		sub, err := nc.Subscribe(subject, onEvent)
		if err != nil {
			return result{name: name}, err
		}
		_ = sub.SetPendingLimits(-1, -1)
	}
	if err := nc.Flush(); err != nil {
		return result{name: name}, err
	}

	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(1024))
	if err != nil {
		return result{name: name}, err
	}
	stop := make(chan struct{})
	var published atomic.Int64
	go progress(name, 5*time.Second, t, func() string {
		cur, _ := eng.rss()
		return fmt.Sprintf("  published %d  RSS %.0f MB", published.Load(), cur)
	}, stop)
	defer close(stop)

	futures := make([]jetstream.PubAckFuture, n)
	header := nats.Header{"Weft-Api-Key": {s.apiKey}}
	start := time.Now()
	for i := range n {
		if ctx.Err() != nil {
			break
		}
		id := prefix + strconv.Itoa(i)
		body, _ := json.Marshal(obj{
			"workflowId":  s.diamond,
			"inputs":      obj{"x": i, "s": "weft"},
			"executionId": id,
		})
		starts[i].Store(int64(time.Since(base)))
		f, err := js.PublishMsgAsync(&nats.Msg{Subject: "weft.executions.submit", Header: header, Data: body}, jetstream.WithMsgID(id))
		if err != nil {
			t.fail("publish: "+err.Error(), time.Now())
			if !seen[i].Swap(true) && terminal.Add(1) == int64(n) {
				close(all)
			}
			continue
		}
		futures[i] = f
		published.Add(1)
	}
	fmt.Printf("  %-14s published %d in %s\n", name, published.Load(), time.Since(start).Round(time.Millisecond))
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(30 * time.Second):
	case <-ctx.Done():
	}
	for i, f := range futures {
		if f == nil {
			continue
		}
		select {
		case <-f.Ok():
		case err := <-f.Err():
			t.fail("PubAck: "+err.Error(), time.Now())
			if !seen[i].Swap(true) && terminal.Add(1) == int64(n) {
				close(all)
			}
		default:
			t.fail("no PubAck after 30s", time.Now())
			if !seen[i].Swap(true) && terminal.Add(1) == int64(n) {
				close(all)
			}
		}
	}

	select {
	case <-all:
	case <-time.After(timeout):
	case <-ctx.Done():
	}
	r := t.result(name, diamondNodes, start)
	if missing := n - int(terminal.Load()); missing > 0 {
		r.errors[fmt.Sprintf("no terminal event within %s", timeout)] = missing
	}
	return r, ctx.Err()
}
