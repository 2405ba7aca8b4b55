package projector

import (
	"context"
	"fmt"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sync/errgroup"

	"github.com/weftdev/weft/events"
)

// clock is a settable Config.Now.
type clock struct{ ns atomic.Int64 }

func newClock(t time.Time) *clock {
	c := &clock{}
	c.set(t)
	return c
}

func (c *clock) Now() time.Time      { return time.Unix(0, c.ns.Load()) }
func (c *clock) set(t time.Time)     { c.ns.Store(t.UnixNano()) }
func (c *clock) add(d time.Duration) { c.ns.Add(int64(d)) }

// bucketStart is the start of the bucket of ended phases now is in, for
// buckets width wide.
func bucketStart(now time.Time, width time.Duration) time.Time {
	w := int64(width / time.Second)
	return time.Unix(now.Unix()-now.Unix()%w, 0)
}

// endedBucketOf returns the one bucket of ended phases that holds exec.
func endedBucketOf(t *testing.T, b *bundle, p *Projector, exec string) string {
	t.Helper()
	ctx := context.Background()
	var holding []string
	iter := b.rdb.Scan(ctx, 0, p.k.ns+"d[0-9]*:*", 1000).Iterator()
	for iter.Next(ctx) {
		ok, err := b.rdb.HExists(ctx, iter.Val(), exec).Result()
		require.NoError(t, err)
		if ok {
			holding = append(holding, iter.Val())
		}
	}
	require.NoError(t, iter.Err())
	require.Len(t, holding, 1, "buckets holding %s", exec)
	return holding[0]
}

// newApplier returns a projector that is only applied to, on b's prefix,
// with the marker set.
func newApplier(t *testing.T, b *bundle, cfg Config) *Projector {
	t.Helper()
	cfg.Prefix = b.prefix
	p := NewWithConfig(b.js, b.rdb, cfg)
	require.NoError(t, b.rdb.Set(context.Background(), p.k.marker(), "test", 0).Err())
	return p
}

func apply(t *testing.T, p *Projector, evs ...events.Event) {
	t.Helper()
	w := make([]wireEvent, len(evs))
	for i, ev := range evs {
		w[i] = wire(ev)
	}
	require.NoError(t, p.applyEvents(context.Background(), w))
}

// A redelivery, or a late event, of an execution that ended in an earlier
// bucket than the projector's clock is now in still finds its phase: for
// at least DoneTTL after it was written, whatever bucket the clock is in.
func TestEndedPhaseOutlivesItsBucket(t *testing.T) {
	t.Parallel()
	const width = defaultDoneTTL
	for _, later := range []time.Duration{width / 2, width + time.Second, 3 * width / 2, 2*width - time.Second} {
		t.Run(later.String(), func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			// Just after a bucket starts: the phase written now is read
			// until the bucket after the next starts, 2*width later.
			c := newClock(bucketStart(time.Now(), width).Add(100 * time.Millisecond))
			p := newApplier(t, b, Config{Now: c.Now})
			x := exec{id: "x", user: "u1", wf: "w1", at: c.Now()}
			y := exec{id: "y", user: "u1", wf: "w1", at: c.Now()}
			xEnd := x.end(events.KindCompleted, 5, node("a", "INPUT", "completed"))
			yEnd := y.end(events.KindFailed, 7, node("a", "INPUT", "failed"))

			// x starts and ends in one batch; y ends in a later one.
			apply(t, p, x.ev(events.KindQueued), xEnd, y.ev(events.KindQueued))
			c.add(later / 2)
			apply(t, p, yEnd)
			want := overview(t, p.Reader, "u1")
			require.EqualValues(t, 2, want.Executions.Total)
			require.EqualValues(t, 1, want.Executions.Completed)
			require.EqualValues(t, 1, want.Executions.Failed)
			require.Zero(t, want.Executions.Queued)
			require.EqualValues(t, 2, want.Nodes.Total)

			// Everything again, later: nothing changes.
			c.add(later - later/2)
			apply(t, p, xEnd, yEnd, x.ev(events.KindQueued), y.ev(events.KindStarted),
				x.ev(events.KindNode, node("a", "INPUT", "completed")))
			require.Equal(t, want, overview(t, p.Reader, "u1"))
			for _, id := range []string{"x", "y"} {
				n, err := b.rdb.Exists(context.Background(), p.k.phase(id)).Result()
				require.NoError(t, err)
				require.Zero(t, n, "an ended execution has no key of its own")
			}
		})
	}
}

// A projector whose clock runs ahead, by less than a bucket, writes to
// the next bucket; the others read it there, and write that execution's
// phase there again rather than to an older bucket.
func TestClocksAheadByLessThanABucket(t *testing.T) {
	t.Parallel()
	const width = defaultDoneTTL
	b := setup(t)
	behind := newClock(bucketStart(time.Now(), width).Add(width / 2))
	ahead := newClock(behind.Now().Add(width * 6 / 10))
	p1 := newApplier(t, b, Config{Now: behind.Now})
	p2 := newApplier(t, b, Config{Now: ahead.Now})
	x := exec{id: "x", user: "u1", wf: "w1", at: behind.Now()}
	xEnd := x.end(events.KindCompleted, 5, node("a", "INPUT", "completed"))

	apply(t, p2, x.ev(events.KindQueued), xEnd)
	next := p2.k.ended(int64(width/time.Second), bucketStart(ahead.Now(), width).Unix())
	require.Equal(t, next, endedBucketOf(t, b, p2, "x"))
	want := overview(t, p1.Reader, "u1")

	// The redelivery and a late node event come to the projector behind.
	apply(t, p1, xEnd, x.ev(events.KindNode, node("z", "HTTP", "completed")))
	want.Nodes.Total++
	want.Nodes.ByType["HTTP"]++
	want.Nodes.ByStatus["completed"]++
	require.Equal(t, want, overview(t, p1.Reader, "u1"))
	require.Equal(t, next, endedBucketOf(t, b, p1, "x"))
	apply(t, p2, x.ev(events.KindNode, node("z", "HTTP", "completed")), xEnd)
	require.Equal(t, want, overview(t, p1.Reader, "u1"))
}

// The buckets of ended phases expire on their own: an ended execution
// leaves nothing behind once its bucket is past.
func TestEndedBucketsExpire(t *testing.T) {
	t.Parallel()
	b := setup(t)
	p := newApplier(t, b, Config{DoneTTL: time.Second})
	ctx := context.Background()
	x := exec{id: "x", user: "u1", wf: "w1", at: time.Now()}
	apply(t, p, x.ev(events.KindQueued))
	ttl, err := b.rdb.TTL(ctx, p.k.phase("x")).Result()
	require.NoError(t, err)
	require.Greater(t, ttl, 6*24*time.Hour, "an open execution's phase has its own key")

	apply(t, p, x.end(events.KindCompleted, 5))
	bucket := endedBucketOf(t, b, p, "x")
	ttl, err = b.rdb.TTL(ctx, bucket).Result()
	require.NoError(t, err)
	require.Positive(t, ttl)
	require.LessOrEqual(t, ttl, 3*time.Second, "its bucket's end and two widths")
	n, err := b.rdb.Exists(ctx, p.k.phase("x")).Result()
	require.NoError(t, err)
	require.Zero(t, n, "moved to the bucket")
	// 3 s, and the embedded server's clock ticks every 500 ms.
	require.Eventually(t, func() bool {
		n, err := b.rdb.Exists(ctx, bucket).Result()
		return err == nil && n == 0
	}, 6*time.Second, 100*time.Millisecond)
	require.EqualValues(t, 1, overview(t, p.Reader, "u1").Executions.Completed)
}

// Projectors ending different executions write the same bucket of ended
// phases at the same time, and never conflict: a bucket is not watched.
func TestDisjointBatchesDoNotConflict(t *testing.T) {
	t.Parallel()
	b := setup(t)
	p1, p2 := newApplier(t, b, Config{}), newApplier(t, b, Config{})
	const perProjector, size = 3000, 64
	at := time.Now()
	run := func(p *Projector, tag string) func() error {
		return func() error {
			var evs []wireEvent
			for i := range perProjector {
				x := exec{id: fmt.Sprintf("%s-%05d", tag, i), user: "u" + strconv.Itoa(i%3), wf: "w1", at: at}
				if i%2 == 0 { // started in one batch, ended in a later one
					evs = append(evs, wire(x.ev(events.KindQueued)))
				}
				evs = append(evs, wire(x.end(events.KindCompleted, 3, node("a", "INPUT", "completed"))))
			}
			return applyAll(p, evs, size)
		}
	}
	var g errgroup.Group
	g.Go(run(p1, "one"))
	g.Go(run(p2, "two"))
	require.NoError(t, g.Wait())
	require.Zero(t, p1.conflicts.Load()+p2.conflicts.Load())
	var total, completed int64
	for _, u := range []string{"u0", "u1", "u2"} {
		o := overview(t, p1.Reader, u)
		require.Zero(t, o.Executions.Queued)
		total += o.Executions.Total
		completed += o.Executions.Completed
	}
	require.EqualValues(t, 2*perProjector, total)
	require.EqualValues(t, 2*perProjector, completed)
}

func TestReadPhaseMergesCopies(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name    string
		own     any
		buckets [nBuckets]any
		want    phase
		at      stored
	}{
		{name: "none", want: phase{nodes: ","}, at: stored{bucket: -1}},
		{name: "open", own: "u|w|1|||,a,",
			want: phase{user: "u", workflow: "w", queued: true, nodes: ",a,"}, at: stored{open: true, bucket: -1}},
		{name: "ended", buckets: [nBuckets]any{nil, "u|w|1||completed|,a,", nil},
			want: phase{user: "u", workflow: "w", queued: true, end: "completed", nodes: ",a,"}, at: stored{bucket: thisBucket}},
		{name: "written again to a newer bucket", buckets: [nBuckets]any{"u|w|1||completed|,a,", "u|w|1|1|completed|,a,b,", nil},
			want: phase{user: "u", workflow: "w", queued: true, started: true, end: "completed", nodes: ",a,b,"}, at: stored{bucket: thisBucket}},
		{name: "left in its own key by the previous layout", own: "u|w|1||completed|,a,", buckets: [nBuckets]any{nil, nil, "u|w||1|completed|,b,"},
			want: phase{user: "u", workflow: "w", queued: true, started: true, end: "completed", nodes: ",b,a,"}, at: stored{open: true, bucket: nextBucket}},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, at, err := readPhase(c.own, c.buckets)
			require.NoError(t, err)
			require.Equal(t, c.want, got)
			require.Equal(t, c.at, at)
		})
	}
	for _, bad := range []string{"", "u|w|1||", "u|w|1|||a", "u|w|1|||"} {
		_, _, err := readPhase(bad, [nBuckets]any{})
		require.ErrorIs(t, err, errBadPhase, bad)
	}
}

// TestDoneTTLOutlastsARedelivery: an ended phase is kept for at least
// DoneTTL, and a batch that was applied but not acked comes back after the
// consumer's AckWait, with time in hand and clock differences on top.
func TestDoneTTLOutlastsARedelivery(t *testing.T) {
	ackWait := events.ProjectorConsumer().AckWait
	require.GreaterOrEqual(t, defaultDoneTTL, 2*ackWait)
	require.Equal(t, defaultDoneTTL, Config{}.withDefaults().DoneTTL)
}
