package projector

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	goredis "github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"golang.org/x/sync/errgroup"

	"github.com/weftdev/weft/events"
	"github.com/weftdev/weft/events/natstest"
	"github.com/weftdev/weft/persistence/redis"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// bundle is one test's servers and clients.
type bundle struct {
	js     jetstream.JetStream
	rdb    *goredis.Client
	prefix string
	// shared reports a real Redis other tests use too: flush only our
	// prefix there.
	shared bool
}

func setup(t testing.TB) *bundle {
	t.Helper()
	_, js := natstest.Connect(t, natstest.Start(t))
	var err error
	ctx := context.Background()
	for _, sc := range events.Streams(events.Settings{}) {
		if sc.Name == events.StreamEvents {
			_, err := js.CreateOrUpdateStream(ctx, sc)
			require.NoError(t, err)
		}
	}

	b := &bundle{js: js, prefix: "test:" + randomHex() + ":"}
	url := os.Getenv("WEFT_TEST_REDIS_URL")
	b.shared = url != ""
	if !b.shared {
		e, err := redis.StartEmbedded("127.0.0.1:0")
		require.NoError(t, err)
		t.Cleanup(e.Close)
		url = e.URL()
	}
	b.rdb, err = redis.Connect(ctx, url)
	require.NoError(t, err)
	t.Cleanup(func() { _ = b.rdb.Close() })
	if b.shared {
		t.Cleanup(func() { b.deletePrefix(t) })
	}
	return b
}

func randomHex() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// start runs a projector until the test ends.
func (b *bundle) start(t testing.TB, cfg Config) *Projector {
	t.Helper()
	cfg.Prefix = b.prefix
	if cfg.CheckEvery == 0 {
		cfg.CheckEvery = 100 * time.Millisecond
	}
	p := NewWithConfig(b.js, b.rdb, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			require.NoError(t, err)
		case <-time.After(10 * time.Second):
			t.Error("Run did not return after its context ended")
		}
	})
	return p
}

// publish stores events in the stream, each under a fresh Nats-Msg-Id so
// that JetStream keeps repeats.
func (b *bundle) publish(t *testing.T, evs ...events.Event) {
	t.Helper()
	ctx := context.Background()
	for _, ev := range evs {
		data, err := json.Marshal(ev)
		require.NoError(t, err)
		m := nats.NewMsg(events.EventSubject(ev.ExecutionID, ev.Kind))
		m.Data = data
		m.Header.Set(events.HeaderMsgID, randomHex())
		_, err = b.js.PublishMsg(ctx, m)
		require.NoError(t, err)
	}
}

// waitIdle waits until the projector has acked everything in the stream.
func (b *bundle) waitIdle(t testing.TB) {
	t.Helper()
	ctx := context.Background()
	require.Eventually(t, func() bool {
		s, err := b.js.Stream(ctx, events.StreamEvents)
		if err != nil {
			return false
		}
		last := s.CachedInfo().State.LastSeq
		c, err := b.js.Consumer(ctx, events.StreamEvents, events.ConsumerProjector)
		if err != nil {
			return false
		}
		ci, err := c.Info(ctx)
		return err == nil && ci.AckFloor.Stream == last && ci.NumAckPending == 0 && ci.NumPending == 0
	}, 20*time.Second, 20*time.Millisecond)
}

// deletePrefix deletes every key of the test's prefix: the FLUSHALL of a
// shared Redis.
func (b *bundle) deletePrefix(t testing.TB) {
	ctx := context.Background()
	iter := b.rdb.Scan(ctx, 0, b.prefix+"*", 1000).Iterator()
	for iter.Next(ctx) {
		require.NoError(t, b.rdb.Del(ctx, iter.Val()).Err())
	}
	require.NoError(t, iter.Err())
}

// state is everything the read side serves for the given users, with the
// time-dependent parts left out.
func (b *bundle) state(t *testing.T, r *Reader, users ...string) map[string]any {
	t.Helper()
	ctx := context.Background()
	out := map[string]any{}
	for _, u := range users {
		o, err := r.Overview(ctx, u)
		require.NoError(t, err)
		o.Rebuilt = time.Time{}
		wfs, err := r.Workflows(ctx, u)
		require.NoError(t, err)
		m, err := r.Metrics(ctx, u)
		require.NoError(t, err)
		out[u] = []any{o, wfs, m.Windows[2].Finished, m.Windows[2].P50Ms, m.Windows[2].P95Ms}
	}
	return out
}

// Event builders.

type exec struct {
	id, user, wf string
	at           time.Time
}

func (x exec) ev(kind string, nodes ...events.NodeEvent) events.Event {
	return events.Event{ExecutionID: x.id, Kind: kind, UserID: x.user, WorkflowID: x.wf, At: x.at, Nodes: nodes}
}

func (x exec) end(kind string, ms float64, nodes ...events.NodeEvent) events.Event {
	ev := x.ev(kind, nodes...)
	ev.DurationMs = ms
	ev.Execution = json.RawMessage(`{"id":"` + x.id + `","status":"` + kind + `","output":{"padding":"a terminal event carries the whole execution"}}`)
	return ev
}

func node(id, typ, status string) events.NodeEvent {
	return events.NodeEvent{ID: id, Type: typ, Status: status, Attempts: 1, DurationMs: 0.5}
}

// lifecycles is one user's executions, of every shape the engine
// publishes, and what they add up to.
func lifecycles(user string, at time.Time) []events.Event {
	x := func(name, wf string) exec { return exec{id: user + "-" + name, user: user, wf: wf, at: at} }
	fast, slow, failed, cancelled := x("fast", "w1"), x("slow", "w1"), x("failed", "w2"), x("cancelled", "w2")
	direct, openQ, openR, rejected := x("direct", "w1"), x("openq", "w1"), x("openr", "w2"), x("rejected", "w1")
	bare := x("bare", "w2")
	rej := events.Event{ExecutionID: rejected.id, Kind: events.KindRejected, At: at,
		Error: events.Errorf(events.CodeForbidden, "no")} // the starter knows no user
	return []events.Event{
		// Fast: queued, then straight to the end with every node.
		fast.ev(events.KindQueued),
		fast.end(events.KindCompleted, 2, node("a", "INPUT", "completed"), node("b", "TRANSFORM", "completed"), node("c", "OUTPUT", "completed")),
		// Slow: every step reported, one branch skipped.
		slow.ev(events.KindQueued),
		slow.ev(events.KindStarted),
		slow.ev(events.KindNode, node("a", "INPUT", "completed")),
		slow.ev(events.KindNode, node("b", "HTTP", "completed")),
		slow.end(events.KindCompleted, 150, node("c", "OUTPUT", "completed"), node("d", "HTTP", "skipped")),
		// Failed: the rest cancelled.
		failed.ev(events.KindQueued),
		failed.ev(events.KindStarted),
		failed.ev(events.KindNode, node("a", "INPUT", "completed")),
		failed.end(events.KindFailed, 40, node("b", "HTTP", "failed"), node("c", "OUTPUT", "cancelled")),
		// Cancelled while queued: no duration.
		cancelled.ev(events.KindQueued),
		cancelled.end(events.KindCancelled, 0, node("a", "INPUT", "cancelled"), node("b", "HTTP", "cancelled"), node("c", "OUTPUT", "cancelled")),
		// Direct NATS submission: no queued.
		direct.ev(events.KindStarted),
		direct.ev(events.KindNode, node("a", "INPUT", "completed")),
		direct.end(events.KindCompleted, 10, node("b", "TRANSFORM", "completed"), node("c", "OUTPUT", "completed")),
		// Still queued; still running.
		openQ.ev(events.KindQueued),
		openR.ev(events.KindQueued),
		openR.ev(events.KindStarted),
		openR.ev(events.KindNode, node("a", "INPUT", "completed")),
		// Accepted, then refused by the starter.
		rejected.ev(events.KindQueued),
		rej,
		// A terminal event alone.
		bare.end(events.KindCompleted, 1000, node("a", "INPUT", "completed")),
	}
}

// wantOverview is what lifecycles add up to.
func wantOverview() Overview {
	return Overview{
		Executions: ExecutionCounts{Total: 9, Queued: 1, Running: 1, Completed: 4, Failed: 1, Cancelled: 1, Rejected: 1},
		Nodes: NodeCounts{
			Total:    13,
			ByType:   map[string]int64{"INPUT": 6, "TRANSFORM": 2, "HTTP": 2, "OUTPUT": 3},
			ByStatus: map[string]int64{"completed": 12, "failed": 1, "skipped": 1, "cancelled": 4},
		},
		Workflows:     2,
		AvgDurationMs: (2 + 150 + 40 + 10 + 1000) / 5.0,
		SuccessRate:   4.0 / 6,
	}
}

func overview(t *testing.T, r *Reader, user string) Overview {
	t.Helper()
	o, err := r.Overview(context.Background(), user)
	require.NoError(t, err)
	o.Rebuilt = time.Time{}
	return o
}

func TestLifecyclesAreCounted(t *testing.T) {
	t.Parallel()
	b := setup(t)
	p := b.start(t, Config{})
	b.publish(t, lifecycles("u1", time.Now())...)
	b.waitIdle(t)
	require.Equal(t, wantOverview(), overview(t, p.Reader, "u1"))

	// An ended execution's phase is a field of a bucket that expires
	// within three DoneTTLs; an open one's has its own key for OpenTTL.
	ctx := context.Background()
	n, err := b.rdb.Exists(ctx, p.k.phase("u1-fast")).Result()
	require.NoError(t, err)
	require.Zero(t, n)
	bucket := endedBucketOf(t, b, p, "u1-fast")
	ttl, err := b.rdb.TTL(ctx, bucket).Result()
	require.NoError(t, err)
	require.GreaterOrEqual(t, ttl, 2*defaultDoneTTL)
	require.LessOrEqual(t, ttl, 3*defaultDoneTTL)
	ttl, err = b.rdb.TTL(ctx, p.k.phase("u1-openr")).Result()
	require.NoError(t, err)
	require.Greater(t, ttl, 6*24*time.Hour)

	// The open ones end: the gauges empty.
	at := time.Now()
	b.publish(t,
		exec{id: "u1-openq", user: "u1", wf: "w1", at: at}.end(events.KindCompleted, 5),
		exec{id: "u1-openr", user: "u1", wf: "w2", at: at}.end(events.KindCompleted, 5, node("b", "OUTPUT", "completed")),
	)
	b.waitIdle(t)
	o := overview(t, p.Reader, "u1")
	require.Zero(t, o.Executions.Queued)
	require.Zero(t, o.Executions.Running)
	require.EqualValues(t, 6, o.Executions.Completed)
	require.EqualValues(t, 9, o.Executions.Total)
	require.EqualValues(t, 14, o.Nodes.Total)
}

func TestUnknownUserGetsZeros(t *testing.T) {
	t.Parallel()
	b := setup(t)
	r := NewReader(b.rdb, b.prefix)
	ctx := context.Background()
	o, err := r.Overview(ctx, "nobody")
	require.NoError(t, err)
	require.Equal(t, Overview{Nodes: NodeCounts{ByType: map[string]int64{}, ByStatus: map[string]int64{}}}, o)
	wfs, err := r.Workflows(ctx, "nobody")
	require.NoError(t, err)
	require.NotNil(t, wfs)
	require.Empty(t, wfs)
	m, err := r.Metrics(ctx, "nobody")
	require.NoError(t, err)
	require.Len(t, m.Windows, 3)
	require.Len(t, m.PerMinute, 60)
	for _, w := range m.Windows {
		require.Zero(t, w.Finished)
		require.Zero(t, w.P95Ms)
	}
}

func TestOverviewJSONShape(t *testing.T) {
	t.Parallel()
	b := setup(t)
	p := b.start(t, Config{})
	b.publish(t, lifecycles("u1", time.Now())...)
	b.waitIdle(t)
	o, err := p.Overview(context.Background(), "u1")
	require.NoError(t, err)
	raw, err := json.Marshal(o)
	require.NoError(t, err)
	var got map[string]any
	require.NoError(t, json.Unmarshal(raw, &got))

	// The contract's fields, with their JSON types.
	ex, ok := got["executions"].(map[string]any)
	require.True(t, ok, string(raw))
	for _, k := range []string{"total", "queued", "running", "completed", "failed", "cancelled"} {
		require.IsType(t, float64(0), ex[k], k)
	}
	nodes, ok := got["nodes"].(map[string]any)
	require.True(t, ok, string(raw))
	require.IsType(t, float64(0), nodes["total"])
	byType, ok := nodes["byType"].(map[string]any)
	require.True(t, ok, string(raw))
	require.EqualValues(t, 6, byType["INPUT"])
	require.IsType(t, float64(0), got["workflows"])
	require.IsType(t, float64(0), got["avgDurationMs"])
	require.EqualValues(t, 240.4, got["avgDurationMs"])
	require.Contains(t, got, "rebuiltAt")

	// An empty byType is an object, never null.
	empty, err := json.Marshal(Overview{}.withMaps())
	require.NoError(t, err)
	require.Contains(t, string(empty), `"byType":{}`)
}

// withMaps is what a Reader returns for nobody.
func (o Overview) withMaps() Overview {
	o.Nodes.ByType, o.Nodes.ByStatus = map[string]int64{}, map[string]int64{}
	return o
}

func TestWorkflowsAndMetrics(t *testing.T) {
	t.Parallel()
	b := setup(t)
	p := b.start(t, Config{})
	now := time.Now()
	b.publish(t, lifecycles("u1", now)...)
	// Ten executions of w3 finished a quarter of an hour ago, 1..10 ms:
	// only the 60-minute window sees them.
	var old []events.Event
	for i := 1; i <= 10; i++ {
		x := exec{id: "old-" + strconv.Itoa(i), user: "u1", wf: "w3", at: now.Add(-15 * time.Minute)}
		old = append(old, x.ev(events.KindQueued), x.end(events.KindCompleted, float64(i)))
	}
	// One finished three hours ago: counted, but in no window.
	ancient := exec{id: "ancient", user: "u1", wf: "w3", at: now.Add(-3 * time.Hour)}
	old = append(old, ancient.end(events.KindFailed, 7))
	b.publish(t, old...)
	b.waitIdle(t)
	ctx := context.Background()

	wfs, err := p.Workflows(ctx, "u1")
	require.NoError(t, err)
	require.Len(t, wfs, 3)
	byID := map[string]WorkflowStats{}
	for _, w := range wfs {
		byID[w.WorkflowID] = w
	}
	require.Equal(t, "w3", wfs[0].WorkflowID, "the most run first")
	w1 := byID["w1"]
	require.EqualValues(t, 5, w1.Total) // fast slow direct openq rejected
	require.EqualValues(t, 3, w1.Completed)
	require.EqualValues(t, 1, w1.Rejected)
	require.Equal(t, 1.0, w1.SuccessRate)
	require.InDelta(t, (2+150+10)/3.0, w1.MeanDurationMs, 0.001)
	require.InEpsilon(t, 10, w1.P50DurationMs, 0.091)
	require.InEpsilon(t, 150, w1.P95DurationMs, 0.091)
	w2 := byID["w2"]
	require.EqualValues(t, 4, w2.Total) // failed cancelled openr bare
	require.EqualValues(t, 1, w2.Completed)
	require.EqualValues(t, 1, w2.Failed)
	require.EqualValues(t, 1, w2.Cancelled)
	require.InDelta(t, 1.0/3, w2.SuccessRate, 1e-9)
	require.InDelta(t, (40+1000)/2.0, w2.MeanDurationMs, 0.001)
	require.InEpsilon(t, 1000, w2.P95DurationMs, 0.091)
	w3 := byID["w3"]
	require.EqualValues(t, 11, w3.Total)
	require.EqualValues(t, 10, w3.Completed)
	require.EqualValues(t, 1, w3.Failed)
	require.InDelta(t, 62/11.0, w3.MeanDurationMs, 0.001)
	require.InEpsilon(t, 6, w3.P50DurationMs, 0.091)  // rank 6 of 1 2 3 4 5 6 7 7 8 9 10
	require.InEpsilon(t, 10, w3.P95DurationMs, 0.091) // rank 11: 10

	m, err := p.Metrics(ctx, "u1")
	require.NoError(t, err)
	require.Len(t, m.Windows, 3)
	w := m.Windows[0]
	require.Equal(t, 1, w.Minutes)
	// fast slow failed cancelled direct bare; the rejected one never ran.
	require.EqualValues(t, 6, w.Finished)
	require.EqualValues(t, 4, w.Completed)
	require.EqualValues(t, 1, w.Failed)
	require.EqualValues(t, 1, w.Cancelled)
	require.InDelta(t, 6/w.SpanSeconds, w.PerSecond, 0.001)
	require.InEpsilon(t, 40, w.P50Ms, 0.091) // 2 10 40 150 1000
	require.InEpsilon(t, 1000, w.P95Ms, 0.091)
	require.InDelta(t, 1202/5.0, w.MeanMs, 0.001)
	require.Equal(t, m.Windows[0].Finished, m.Windows[1].Finished)
	h := m.Windows[2]
	require.Equal(t, 60, h.Minutes)
	require.EqualValues(t, 16, h.Finished)
	require.GreaterOrEqual(t, h.SpanSeconds, 3600.0)
	require.Len(t, m.PerMinute, 60)
	var sum int64
	for _, pt := range m.PerMinute {
		sum += pt.Finished
	}
	require.EqualValues(t, 16, sum)
	for i := 1; i < 60; i++ {
		require.Equal(t, time.Minute, m.PerMinute[i].Minute.Sub(m.PerMinute[i-1].Minute))
	}
	quarter := time.Unix(minuteOf(now.Add(-15*time.Minute))*60, 0).UTC()
	var q *MinutePoint
	for i := range m.PerMinute {
		if m.PerMinute[i].Minute.Equal(quarter) {
			q = &m.PerMinute[i]
		}
	}
	require.NotNil(t, q)
	require.EqualValues(t, 10, q.Finished, "the quarter-hour-old minute")
	require.InEpsilon(t, 10, q.P95Ms, 0.091)
}

func TestDuplicatesAndRedeliveriesCountOnce(t *testing.T) {
	t.Parallel()
	b := setup(t)
	p := b.start(t, Config{})
	evs := lifecycles("u1", time.Now())
	// Every event twice, stored twice (distinct Nats-Msg-Id), the second
	// time in reverse order: what a republish after a crash looks like.
	b.publish(t, evs...)
	for i := len(evs) - 1; i >= 0; i-- {
		b.publish(t, evs[i])
	}
	b.waitIdle(t)
	require.Equal(t, wantOverview(), overview(t, p.Reader, "u1"))

	// A redelivery: the same stream messages applied again, as when an
	// ack is lost.
	ctx := context.Background()
	c, err := b.js.CreateOrUpdateConsumer(ctx, events.StreamEvents, jetstream.ConsumerConfig{
		Durable: "again", AckPolicy: jetstream.AckExplicitPolicy, DeliverPolicy: jetstream.DeliverAllPolicy,
	})
	require.NoError(t, err)
	var msgs []item
	for len(msgs) < 2*len(evs) {
		batch, err := c.Fetch(2*len(evs)-len(msgs), jetstream.FetchMaxWait(2*time.Second))
		require.NoError(t, err)
		for m := range batch.Messages() {
			msgs = append(msgs, decodeItem(m))
		}
		require.NoError(t, batch.Error())
	}
	require.NoError(t, p.apply(ctx, msgs))
	require.NoError(t, p.apply(ctx, msgs[:7]))
	require.Equal(t, wantOverview(), overview(t, p.Reader, "u1"))
}

func TestEventsInAnyOrderCountTheSame(t *testing.T) {
	t.Parallel()
	b := setup(t)
	p := b.start(t, Config{})
	evs := lifecycles("u1", time.Now())
	rev := make([]events.Event, len(evs))
	for i, ev := range evs {
		ev.UserID, ev.ExecutionID = "u2", "r"+ev.ExecutionID
		if ev.Kind == events.KindRejected {
			ev.UserID = ""
		}
		rev[len(evs)-1-i] = ev
	}
	// The starter's rejection, which names no user, comes first and alone;
	// the rest in reverse.
	var rest []events.Event
	for _, ev := range rev {
		if ev.Kind == events.KindRejected {
			b.publish(t, ev)
		} else {
			rest = append(rest, ev)
		}
	}
	b.waitIdle(t)
	o := overview(t, p.Reader, "u2")
	require.Zero(t, o.Executions.Total, "nobody to count it for yet")
	b.publish(t, rest...)
	b.waitIdle(t)
	require.Equal(t, wantOverview(), overview(t, p.Reader, "u2"))
}

func TestRebuildAfterRedisIsEmptied(t *testing.T) {
	t.Parallel()
	b := setup(t)
	p := b.start(t, Config{})
	b.publish(t, lifecycles("u1", time.Now())...)
	b.publish(t, lifecycles("u2", time.Now())...)
	b.waitIdle(t)
	before := b.state(t, p.Reader, "u1", "u2")
	o1, err := p.Overview(context.Background(), "u1")
	require.NoError(t, err)
	require.False(t, o1.Rebuilt.IsZero())

	if b.shared {
		b.deletePrefix(t)
	} else {
		require.NoError(t, b.rdb.FlushAll(context.Background()).Err())
	}
	// Counted while the counters were missing, and after: neither lost
	// nor counted twice.
	b.publish(t, lifecycles("u3", time.Now())...)
	require.Eventually(t, func() bool {
		n, err := b.rdb.Exists(context.Background(), p.k.marker()).Result()
		return err == nil && n == 1
	}, 10*time.Second, 20*time.Millisecond)
	b.publish(t, lifecycles("u4", time.Now())...)
	b.waitIdle(t)
	require.Equal(t, before, b.state(t, p.Reader, "u1", "u2"))
	require.Equal(t, wantOverview(), overview(t, p.Reader, "u3"))
	require.Equal(t, wantOverview(), overview(t, p.Reader, "u4"))
}

// generate returns n executions' events across two users and three
// workflows, of the engine's shapes.
func generate(n int, at time.Time) []events.Event {
	var out []events.Event
	for i := range n {
		x := exec{id: fmt.Sprintf("g%05d", i), user: "u" + strconv.Itoa(i%2), wf: "w" + strconv.Itoa(i%3), at: at}
		ms := float64(1 + i%200)
		switch i % 5 {
		case 0:
			out = append(out, x.ev(events.KindQueued),
				x.end(events.KindCompleted, ms, node("a", "INPUT", "completed"), node("b", "OUTPUT", "completed")))
		case 1:
			out = append(out, x.ev(events.KindQueued), x.ev(events.KindStarted),
				x.ev(events.KindNode, node("a", "INPUT", "completed")),
				x.end(events.KindCompleted, ms, node("b", "HTTP", "completed"), node("c", "OUTPUT", "skipped")))
		case 2:
			out = append(out, x.ev(events.KindQueued), x.ev(events.KindStarted),
				x.end(events.KindFailed, ms, node("a", "HTTP", "failed"), node("b", "OUTPUT", "cancelled")))
		case 3:
			out = append(out, x.ev(events.KindStarted), x.ev(events.KindNode, node("a", "INPUT", "completed")))
		case 4:
			out = append(out, x.ev(events.KindQueued))
		}
	}
	return out
}

func TestTwoProjectorsCountAsOne(t *testing.T) {
	t.Parallel()
	one, two := setup(t), setup(t)
	evs := generate(300, time.Now())
	// Small batches, so the two interleave.
	p1 := one.start(t, Config{BatchSize: 16})
	p2 := two.start(t, Config{BatchSize: 16})
	two.start(t, Config{BatchSize: 16})
	one.publish(t, evs...)
	two.publish(t, evs...)
	one.waitIdle(t)
	two.waitIdle(t)
	want := one.state(t, p1.Reader, "u0", "u1")
	require.Equal(t, want, two.state(t, p2.Reader, "u0", "u1"))
	o := overview(t, p1.Reader, "u0")
	require.EqualValues(t, 150, o.Executions.Total)
	require.EqualValues(t, 30, o.Executions.Queued)
	require.EqualValues(t, 30, o.Executions.Running)
	require.EqualValues(t, 60, o.Executions.Completed)
	require.EqualValues(t, 30, o.Executions.Failed)
}

func TestHistogramError(t *testing.T) {
	t.Parallel()
	for ms := 0.07; ms < 1e8; ms *= 1.07 {
		got := bucketMid(bucketOf(ms))
		require.InEpsilon(t, ms, got, 0.0906, "%v ms", ms)
	}
	require.Equal(t, 0, bucketOf(0))
	require.Equal(t, histBuckets-1, bucketOf(1e12))
	h := histogram{}
	require.Zero(t, h.quantile(0.95))
}

func TestKeyPatternEscapesGlobs(t *testing.T) {
	t.Parallel()
	require.Equal(t, `we\*ft\[1\]:dash:*`, newKeys("we*ft[1]:").pattern())
}

// wire is the part of ev the projector reads, as decodeEvent returns it.
func wire(ev events.Event) wireEvent {
	return wireEvent{ExecutionID: ev.ExecutionID, Kind: ev.Kind, UserID: ev.UserID,
		WorkflowID: ev.WorkflowID, At: ev.At, Nodes: ev.Nodes, DurationMs: ev.DurationMs}
}

// applyAll applies evs in batches of size.
func applyAll(p *Projector, evs []wireEvent, size int) error {
	for i := 0; i < len(evs); i += size {
		if err := p.applyEvents(context.Background(), evs[i:min(i+size, len(evs))]); err != nil {
			return err
		}
	}
	return nil
}

func TestConflictingBatchesCountOnce(t *testing.T) {
	t.Parallel()
	b, serial := setup(t), setup(t)
	ctx := context.Background()
	p1 := NewWithConfig(b.js, b.rdb, Config{Prefix: b.prefix})
	p2 := NewWithConfig(b.js, b.rdb, Config{Prefix: b.prefix})
	ps := NewWithConfig(serial.js, serial.rdb, Config{Prefix: serial.prefix})
	require.NoError(t, b.rdb.Set(ctx, p1.k.marker(), "test", 0).Err())
	require.NoError(t, serial.rdb.Set(ctx, ps.k.marker(), "test", 0).Err())

	// Rounds of executions, each seen starting by one projector and ending
	// by the other at the same time, both in random order: their
	// transactions read and write the same phases. Until at least one
	// transaction lost the race and was computed again.
	const perRound = 300
	at := time.Now()
	rounds := 0
	for ; rounds < 30 && p1.conflicts.Load()+p2.conflicts.Load() == 0; rounds++ {
		var starts, ends []wireEvent
		for i := range perRound {
			x := exec{id: fmt.Sprintf("c%02d-%04d", rounds, i), user: "u" + strconv.Itoa(i%3), wf: "w" + strconv.Itoa(i%4), at: at}
			starts = append(starts, wire(x.ev(events.KindQueued)), wire(x.ev(events.KindStarted)),
				wire(x.ev(events.KindNode, node("a", "INPUT", "completed"))))
			ends = append(ends, wire(x.end(events.KindCompleted, float64(1+i%50),
				node("a", "INPUT", "completed"), node("b", "HTTP", "completed"))))
		}
		require.NoError(t, applyAll(ps, append(slices.Clone(starts), ends...), 64))
		mrand.Shuffle(len(starts), func(i, j int) { starts[i], starts[j] = starts[j], starts[i] })
		mrand.Shuffle(len(ends), func(i, j int) { ends[i], ends[j] = ends[j], ends[i] })
		var g errgroup.Group
		g.Go(func() error { return applyAll(p1, starts, 24) })
		g.Go(func() error { return applyAll(p2, ends, 8) })
		require.NoError(t, g.Wait())
	}
	require.Positive(t, p1.conflicts.Load()+p2.conflicts.Load(), "no transaction was retried in %d rounds", rounds)
	t.Logf("%d rounds, %d + %d batches computed again", rounds, p1.conflicts.Load(), p2.conflicts.Load())

	users := []string{"u0", "u1", "u2"}
	require.Equal(t, serial.state(t, ps.Reader, users...), b.state(t, p1.Reader, users...))
	var total, completed, nodes int64
	for _, u := range users {
		o := overview(t, p1.Reader, u)
		require.Zero(t, o.Executions.Queued, u)
		require.Zero(t, o.Executions.Running, u)
		total += o.Executions.Total
		completed += o.Executions.Completed
		nodes += o.Nodes.Total
	}
	require.EqualValues(t, rounds*perRound, total)
	require.EqualValues(t, rounds*perRound, completed)
	require.EqualValues(t, 2*rounds*perRound, nodes)
}
