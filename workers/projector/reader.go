package projector

import (
	"cmp"
	"context"
	"slices"
	"strconv"
	"strings"
	"time"

	goredis "github.com/redis/go-redis/v9"
)

// Reader serves the dashboard counters from Redis. It needs only the
// client, so the ingress reads without running a consumer.
type Reader struct {
	rdb goredis.UniversalClient
	k   keys
	now func() time.Time
}

// NewReader returns a reader of the counters kept under prefix.
func NewReader(rdb goredis.UniversalClient, prefix string) *Reader {
	return &Reader{rdb: rdb, k: newKeys(prefix), now: time.Now}
}

// Overview is a user's dashboard summary, shaped as the contract's
// GET /api/dashboard/overview.
type Overview struct {
	Executions ExecutionCounts `json:"executions"`
	Nodes      NodeCounts      `json:"nodes"`
	// Workflows is the number of distinct workflows the user ran.
	Workflows int64 `json:"workflows"`
	// AvgDurationMs is the mean duration of finished executions.
	AvgDurationMs float64 `json:"avgDurationMs"`
	// SuccessRate is completed / (completed + failed + cancelled), 0 to 1.
	SuccessRate float64 `json:"successRate"`
	// Rebuilt is when the counters were last rebuilt from the event
	// stream; they cover the stream's retention from then on. Zero while
	// a rebuild has not happened yet.
	Rebuilt time.Time `json:"rebuiltAt,omitzero"`
}

// ExecutionCounts counts a user's executions: Queued and Running are
// gauges, the others totals.
type ExecutionCounts struct {
	Total     int64 `json:"total"`
	Queued    int64 `json:"queued"`
	Running   int64 `json:"running"`
	Completed int64 `json:"completed"`
	Failed    int64 `json:"failed"`
	Cancelled int64 `json:"cancelled"`
	// Rejected counts submissions refused before they ran.
	Rejected int64 `json:"rejected"`
}

// NodeCounts counts the nodes that ran (completed or failed), in all and
// by node type; ByStatus also counts skipped and cancelled nodes.
type NodeCounts struct {
	Total    int64            `json:"total"`
	ByType   map[string]int64 `json:"byType"`
	ByStatus map[string]int64 `json:"byStatus"`
}

// WorkflowStats is one workflow's figures, for GET /api/dashboard/workflows.
type WorkflowStats struct {
	WorkflowID string `json:"workflowId"`
	Total      int64  `json:"total"`
	Completed  int64  `json:"completed"`
	Failed     int64  `json:"failed"`
	Cancelled  int64  `json:"cancelled"`
	Rejected   int64  `json:"rejected"`
	// SuccessRate is completed / (completed + failed + cancelled), 0 to 1.
	SuccessRate    float64 `json:"successRate"`
	MeanDurationMs float64 `json:"meanDurationMs"`
	// P50DurationMs and P95DurationMs come from the histogram: within 9.1 %.
	P50DurationMs float64 `json:"p50DurationMs"`
	P95DurationMs float64 `json:"p95DurationMs"`
}

// Metrics is throughput and latency over recent windows, for
// GET /api/dashboard/metrics.
type Metrics struct {
	// Windows are the last 1, 5 and 60 minutes.
	Windows []Window `json:"windows"`
	// PerMinute is the last 60 minutes, oldest first, the current
	// (partial) minute last.
	PerMinute []MinutePoint `json:"perMinute"`
}

// Window is the figures of executions finished within the last Minutes
// minutes: the current minute so far and the Minutes whole minutes
// before it, SpanSeconds in all (per-minute buckets cannot cut finer).
type Window struct {
	Minutes     int     `json:"minutes"`
	SpanSeconds float64 `json:"spanSeconds"`
	Finished    int64   `json:"finished"`
	Completed   int64   `json:"completed"`
	Failed      int64   `json:"failed"`
	Cancelled   int64   `json:"cancelled"`
	// PerSecond and PerMinute are Finished over the span.
	PerSecond float64 `json:"perSecond"`
	PerMinute float64 `json:"perMinute"`
	MeanMs    float64 `json:"meanMs"`
	P50Ms     float64 `json:"p50Ms"`
	P95Ms     float64 `json:"p95Ms"`
}

// MinutePoint is one minute's finished executions and their latency.
type MinutePoint struct {
	Minute   time.Time `json:"minute"`
	Finished int64     `json:"finished"`
	Failed   int64     `json:"failed"`
	P50Ms    float64   `json:"p50Ms"`
	P95Ms    float64   `json:"p95Ms"`
}

// Overview returns a user's summary; a user with no data gets zeros.
func (r *Reader) Overview(ctx context.Context, userID string) (Overview, error) {
	pipe := r.rdb.Pipeline()
	h := pipe.HGetAll(ctx, r.k.user(userID))
	wfs := pipe.SCard(ctx, r.k.workflows(userID))
	marker := pipe.Get(ctx, r.k.marker())
	if _, err := pipe.Exec(ctx); err != nil && err != goredis.Nil {
		return Overview{}, err
	}
	f := h.Val()
	o := Overview{
		Executions: ExecutionCounts{
			Total: num(f, "total"), Queued: num(f, "queued"), Running: num(f, "running"),
			Completed: num(f, "completed"), Failed: num(f, "failed"), Cancelled: num(f, "cancelled"),
			Rejected: num(f, "rejected"),
		},
		Nodes:     NodeCounts{Total: num(f, "nodes"), ByType: map[string]int64{}, ByStatus: map[string]int64{}},
		Workflows: wfs.Val(),
	}
	for k, v := range f {
		if t, ok := strings.CutPrefix(k, "nt:"); ok {
			o.Nodes.ByType[t], _ = strconv.ParseInt(v, 10, 64)
		} else if s, ok := strings.CutPrefix(k, "ns:"); ok {
			o.Nodes.ByStatus[s], _ = strconv.ParseInt(v, 10, 64)
		}
	}
	o.AvgDurationMs = meanMs(f)
	o.SuccessRate = successRate(o.Executions.Completed, o.Executions.Failed, o.Executions.Cancelled)
	o.Rebuilt, _ = time.Parse(time.RFC3339, marker.Val())
	return o, nil
}

// Workflows returns the figures of every workflow the user ran, the most
// run first; none is an empty slice.
func (r *Reader) Workflows(ctx context.Context, userID string) ([]WorkflowStats, error) {
	ids, err := r.rdb.SMembers(ctx, r.k.workflows(userID)).Result()
	if err != nil {
		return nil, err
	}
	out := make([]WorkflowStats, 0, len(ids))
	if len(ids) == 0 {
		return out, nil
	}
	pipe := r.rdb.Pipeline()
	cmds := make([]*goredis.MapStringStringCmd, len(ids))
	for i, id := range ids {
		cmds[i] = pipe.HGetAll(ctx, r.k.workflow(userID, id))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, err
	}
	for i, id := range ids {
		f := cmds[i].Val()
		h := histogram{}
		h.add(f)
		s := WorkflowStats{
			WorkflowID: id, Total: num(f, "total"),
			Completed: num(f, "completed"), Failed: num(f, "failed"), Cancelled: num(f, "cancelled"),
			Rejected:       num(f, "rejected"),
			MeanDurationMs: meanMs(f),
			P50DurationMs:  h.quantile(0.50),
			P95DurationMs:  h.quantile(0.95),
		}
		s.SuccessRate = successRate(s.Completed, s.Failed, s.Cancelled)
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b WorkflowStats) int {
		return cmp.Or(cmp.Compare(b.Total, a.Total), cmp.Compare(a.WorkflowID, b.WorkflowID))
	})
	return out, nil
}

// Metrics returns throughput and latency over the last 1, 5 and 60
// minutes, from 61 per-minute buckets read in one round trip.
func (r *Reader) Metrics(ctx context.Context, userID string) (Metrics, error) {
	now := r.now()
	cur := minuteOf(now)
	const buckets = 61
	pipe := r.rdb.Pipeline()
	cmds := make([]*goredis.MapStringStringCmd, buckets)
	for i := range buckets { // cmds[0] is the current minute
		cmds[i] = pipe.HGetAll(ctx, r.k.minute(userID, cur-int64(i)))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return Metrics{}, err
	}
	into := float64(now.Unix()-cur*60) + float64(now.Nanosecond())/1e9
	m := Metrics{PerMinute: make([]MinutePoint, 0, 60)}
	for _, n := range []int{1, 5, 60} {
		w := Window{Minutes: n, SpanSeconds: round3(float64(n*60) + into)}
		h := histogram{}
		var dsum, dn int64
		for i := 0; i <= n; i++ {
			f := cmds[i].Val()
			w.Finished += num(f, "n")
			w.Completed += num(f, "completed")
			w.Failed += num(f, "failed")
			w.Cancelled += num(f, "cancelled")
			dsum += num(f, "dsum")
			dn += num(f, "dn")
			h.add(f)
		}
		w.PerSecond = round3(float64(w.Finished) / w.SpanSeconds)
		w.PerMinute = round3(float64(w.Finished) * 60 / w.SpanSeconds)
		if dn > 0 {
			w.MeanMs = round3(float64(dsum) / float64(dn) / 1000)
		}
		w.P50Ms, w.P95Ms = h.quantile(0.50), h.quantile(0.95)
		m.Windows = append(m.Windows, w)
	}
	for i := 59; i >= 0; i-- {
		f := cmds[i].Val()
		h := histogram{}
		h.add(f)
		m.PerMinute = append(m.PerMinute, MinutePoint{
			Minute:   time.Unix((cur-int64(i))*60, 0).UTC(),
			Finished: num(f, "n"), Failed: num(f, "failed"),
			P50Ms: h.quantile(0.50), P95Ms: h.quantile(0.95),
		})
	}
	return m, nil
}

// num reads an integer field, 0 when absent.
func num(f map[string]string, field string) int64 {
	n, _ := strconv.ParseInt(f[field], 10, 64)
	return n
}

// meanMs is dsum (µs) over dn, in milliseconds.
func meanMs(f map[string]string) float64 {
	if dn := num(f, "dn"); dn > 0 {
		return round3(float64(num(f, "dsum")) / float64(dn) / 1000)
	}
	return 0
}

func successRate(completed, failed, cancelled int64) float64 {
	if d := completed + failed + cancelled; d > 0 {
		return float64(completed) / float64(d)
	}
	return 0
}
