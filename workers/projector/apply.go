package projector

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	expbackoff "github.com/cenkalti/backoff/v5"
	goredis "github.com/redis/go-redis/v9"

	"github.com/weftdev/weft/events"
)

// maxAttempts bounds how often a batch is computed again after another
// writer changed what it read. Each lost race means some other batch was
// applied, so this is only reached under heavy contention on the same
// executions; the batch is then given back and comes again later.
const maxAttempts = 10

// applyEvents counts a batch of events, wholly or not at all, as if no
// other projector ran: optimistically, under WATCH.
//
// It watches the marker and the own key of every execution in the batch,
// reads those keys with one MGET and the executions' fields in the
// buckets of ended phases with one HMGET each, computes in Go what changes
// and issues the writes in one MULTI/EXEC. Every write follows from the
// phases read, and every write of a phase writes its execution's own key
// (see doc.go), so if another projector changed one of them in between
// (or a rebuild removed the marker), EXEC does nothing and the batch is
// computed again from what is there now. Without the marker the counters
// are being rebuilt, and the batch is refused with errRebuild rather than
// counted into a keyspace that is about to be swept.
//
// On Redis Cluster the prefix's hash tag ("{weft}:") puts every key in one
// slot, which WATCH and MULTI across them need.
func (p *Projector) applyEvents(ctx context.Context, evs []wireEvent) error {
	recs := p.records(evs, p.cfg.Now())
	if len(recs) == 0 {
		return nil
	}
	// The marker, then every record's own key: watched and read together.
	keys := make([]string, 1+len(recs))
	keys[0] = p.k.marker()
	execs := make([]string, len(recs))
	for i := range recs {
		keys[1+i] = p.k.phase(recs[i].exec)
		execs[i] = recs[i].exec
	}
	t := newTally(p.k, len(recs))
	var wait *expbackoff.ExponentialBackOff
	for attempt := 1; ; attempt++ {
		err := p.rdb.Watch(ctx, func(tx *goredis.Tx) error {
			return p.applyOnce(ctx, tx, keys, execs, recs, t)
		}, keys...)
		if !errors.Is(err, goredis.TxFailedErr) {
			return err
		}
		p.conflicts.Add(1)
		if attempt == maxAttempts {
			return fmt.Errorf("%d attempts lost to concurrent writers: %w", attempt, err)
		}
		if wait == nil {
			// Jittered, so that two projectors that collided do not
			// collide again in step.
			wait = &expbackoff.ExponentialBackOff{
				InitialInterval:     time.Millisecond,
				RandomizationFactor: 0.5,
				Multiplier:          2,
				MaxInterval:         50 * time.Millisecond,
			}
			wait.Reset()
		}
		if !sleep(ctx, wait.NextBackOff()) {
			return ctx.Err()
		}
	}
}

// The buckets of ended phases a batch reads: the one its clock is in,
// the one before, which holds phases until they are at least DoneTTL
// old, and the one after, which a projector whose clock runs ahead of
// this one's (by less than a bucket) writes to.
const (
	prevBucket = iota
	thisBucket
	nextBucket
	nBuckets
)

// endedBuckets returns the start, in Unix seconds, of the buckets of ended
// phases around now, and their width in seconds: DoneTTL, in whole seconds.
func (p *Projector) endedBuckets(now time.Time) (start [nBuckets]int64, width int64) {
	width = max(int64(p.cfg.DoneTTL/time.Second), 1)
	this := now.Unix() - now.Unix()%width
	for i := range start {
		start[i] = this + int64(i-thisBucket)*width
	}
	return start, width
}

// applyOnce is one attempt: read the phases, compute, write. Run inside
// WATCH of keys; it returns goredis.TxFailedErr if a key changed since.
func (p *Projector) applyOnce(ctx context.Context, tx *goredis.Tx, keys, execs []string, recs []record, t *tally) error {
	// The clock is read at every attempt: a batch computed again after
	// the bucket rolled over writes to the new one.
	start, width := p.endedBuckets(p.cfg.Now())
	// The buckets are read but not watched: a write of an execution's
	// phase to a bucket also writes its own key, which is watched.
	var open *goredis.SliceCmd
	var ended [nBuckets]*goredis.SliceCmd
	_, err := tx.Pipelined(ctx, func(pipe goredis.Pipeliner) error {
		open = pipe.MGet(ctx, keys...)
		for i := range ended {
			ended[i] = pipe.HMGet(ctx, p.k.ended(width, start[i]), execs...)
		}
		return nil
	})
	if err != nil {
		return err
	}
	vals := open.Val()
	if vals[0] == nil {
		return errRebuild
	}
	t.reset()
	var inBucket [nBuckets]any
	for i := range recs {
		for j := range ended {
			inBucket[j] = ended[j].Val()[i]
		}
		old, at, err := readPhase(vals[1+i], inBucket)
		if err != nil {
			return fmt.Errorf("phase of %q: %w", recs[i].exec, err)
		}
		t.count(i, &recs[i], old, at)
	}
	if len(t.phases) == 0 {
		return nil // nothing new: no phase moved, so no counter either
	}
	// Open phases expire in whole seconds (SET … EX), never 0: go-redis
	// would send that as no expiry at all.
	openTTL := max(p.cfg.OpenTTL.Truncate(time.Second), time.Second)
	_, err = tx.TxPipelined(ctx, func(pipe goredis.Pipeliner) error {
		for _, w := range t.phases {
			key := keys[1+w.rec]
			if !w.ended {
				// Kept for OpenTTL: longer than the execution may run.
				pipe.Set(ctx, key, w.value, openTTL)
				continue
			}
			// To the newest bucket it was in, so that a newer copy of a
			// phase never expires before an older one.
			b := max(w.at.bucket, thisBucket)
			t.hset[b] = append(t.hset[b], recs[w.rec].exec, w.value)
			t.touch = append(t.touch, key, "")
			t.moved = append(t.moved, key)
		}
		for i, fv := range t.hset {
			if len(fv) > 0 {
				key := p.k.ended(width, start[i])
				pipe.HSet(ctx, key, fv...)
				// Read while this bucket or the next is a projector's own,
				// until start+2*width; a width more for clocks that differ.
				pipe.ExpireAt(ctx, key, time.Unix(start[i]+3*width, 0))
			}
		}
		if len(t.moved) > 0 {
			// Every ended phase written leaves its own key deleted, but
			// written first (SET then DEL, in the transaction): a projector
			// watching that key for the same execution then has its EXEC
			// refused, as for any change of the phase. See doc.go.
			pipe.MSet(ctx, t.touch...)
			pipe.Del(ctx, t.moved...)
		}
		for f, v := range t.incr {
			if v != 0 {
				pipe.HIncrBy(ctx, f.key, f.field, v)
			}
		}
		for key, members := range t.sets {
			pipe.SAdd(ctx, key, members...)
		}
		for key, at := range t.expire {
			pipe.ExpireAt(ctx, key, time.Unix(at, 0))
		}
		return nil
	})
	return err
}

// record is what a batch says about one execution: its events merged.
// Merging is sound because the counters depend only on which events an
// execution has seen, not their order (see doc.go); and it is cheap where
// it matters, as a fast execution's events mostly share a batch.
type record struct {
	exec, user, workflow string
	queued, started      bool
	// Of the first terminal event: its kind ("" if none came), whether it
	// carries a duration, that duration in microseconds and its histogram
	// field, and the minute it ended ("" outside the metrics horizon).
	end    string
	timed  bool
	durUs  int64
	hist   string
	minute string
	// expireAt is when that minute's bucket expires, in Unix seconds.
	expireAt int64
	nodes    []events.NodeEvent
}

// records merges a batch into one record per execution, in order of
// first appearance.
func (p *Projector) records(evs []wireEvent, now time.Time) []record {
	recs := make([]record, 0, len(evs))
	byExec := make(map[string]int, len(evs))
	for i := range evs {
		ev := &evs[i]
		terminal := events.TerminalKind(ev.Kind) || ev.Kind == events.KindRejected
		if !terminal && ev.Kind != events.KindQueued && ev.Kind != events.KindStarted && ev.Kind != events.KindNode {
			continue // a kind this version does not count: acked all the same
		}
		j, ok := byExec[ev.ExecutionID]
		if !ok {
			j = len(recs)
			byExec[ev.ExecutionID] = j
			recs = append(recs, record{exec: ev.ExecutionID})
		}
		r := &recs[j]
		r.user = cmp.Or(r.user, ev.UserID)
		r.workflow = cmp.Or(r.workflow, ev.WorkflowID)
		switch {
		case ev.Kind == events.KindQueued:
			r.queued = true
		case !terminal:
			r.started = true // a node event means it runs, started seen or not
		case r.end == "":
			p.recordEnd(r, ev, now)
		}
		r.nodes = slices.Grow(r.nodes, len(ev.Nodes))
		for _, n := range ev.Nodes {
			if countedNodeStatus(n.Status) && n.ID != "" && !slices.ContainsFunc(r.nodes, func(m events.NodeEvent) bool { return m.ID == n.ID }) {
				r.nodes = append(r.nodes, n)
			}
		}
	}
	return recs
}

// recordEnd records the terminal event ev of r.
func (p *Projector) recordEnd(r *record, ev *wireEvent, now time.Time) {
	r.end = ev.Kind
	if ev.DurationMs > 0 {
		r.timed = true
		r.durUs = int64(ev.DurationMs*1000 + 0.5)
		r.hist = histField(bucketOf(ev.DurationMs))
	}
	// A rebuild replays old events: only recent ones go to the per-minute
	// buckets, which would expire at once anyway.
	if !ev.At.IsZero() && ev.At.After(now.Add(-p.cfg.MetricsHorizon)) && ev.At.Before(now.Add(time.Hour)) {
		mi := minuteOf(ev.At)
		r.minute = strconv.FormatInt(mi, 10)
		// Kept two hours past the minute: Metrics reads the last 61.
		r.expireAt = (mi+1)*60 + int64(2*time.Hour/time.Second)
	}
}

// countedNodeStatus reports whether a node status is final: the node
// transitions that are counted.
func countedNodeStatus(s string) bool {
	switch s {
	case "completed", "failed", "skipped", "cancelled":
		return true
	}
	return false
}

// phase is what has been counted of one execution, stored as
// "user|workflow|q|s|t|,node,node,": who it belongs to (once known),
// whether queued and started (or a node event) were seen ("1" or ""),
// its terminal kind, and the nodes counted.
type phase struct {
	user, workflow  string
	queued, started bool
	end             string
	nodes           string // ",id,id,", or "," for none
}

var errBadPhase = errors.New("malformed phase")

// stored is where an execution's phase was found.
type stored struct {
	open   bool // in its own key
	bucket int  // the newest bucket of ended phases holding it; -1 if none
}

// readPhase merges the copies of an execution's phase as MGET and HMGET
// return them (nil where there is none): its own key's and each bucket's.
//
// There is mostly one copy. Two are left where a phase was written
// again to a newer bucket, and the older copy has not expired yet; the
// newer one then holds all of the older one, as every write of a phase
// starts from all its copies. Flags and nodes only ever get added, so the
// union of the copies is the newest of them, and it is what was counted.
func readPhase(own any, buckets [nBuckets]any) (phase, stored, error) {
	ph := phase{nodes: ","}
	at := stored{bucket: -1}
	found := false
	add := func(v any) error {
		s, ok := v.(string)
		if !ok {
			return nil
		}
		o, err := parsePhase(s)
		if err != nil {
			return err
		}
		if found {
			ph = ph.merge(o)
		} else {
			ph, found = o, true
		}
		return nil
	}
	for i := nBuckets - 1; i >= 0; i-- {
		if buckets[i] == nil {
			continue
		}
		if err := add(buckets[i]); err != nil {
			return phase{}, at, err
		}
		at.bucket = max(at.bucket, i)
	}
	if own != nil {
		if err := add(own); err != nil {
			return phase{}, at, err
		}
		at.open = true
	}
	return ph, at, nil
}

// parsePhase reads a stored phase.
func parsePhase(s string) (phase, error) {
	var f [5]string
	for i := range f {
		var found bool
		f[i], s, found = strings.Cut(s, "|")
		if !found {
			return phase{}, errBadPhase
		}
	}
	if len(s) == 0 || s[0] != ',' || s[len(s)-1] != ',' {
		return phase{}, errBadPhase
	}
	return phase{user: f[0], workflow: f[1], queued: f[2] != "", started: f[3] != "", end: f[4], nodes: s}, nil
}

// merge returns what ph and o together say was counted: the flags of
// either, the nodes of both. Where both name a user, workflow or end, they
// are the same (an execution has one of each); ph's is kept.
func (ph phase) merge(o phase) phase {
	ph.user = cmp.Or(ph.user, o.user)
	ph.workflow = cmp.Or(ph.workflow, o.workflow)
	ph.queued = ph.queued || o.queued
	ph.started = ph.started || o.started
	ph.end = cmp.Or(ph.end, o.end)
	for id := range strings.SplitSeq(o.nodes[1:], ",") {
		if id != "" && !hasNode(ph.nodes, id) {
			ph.nodes += id + ","
		}
	}
	return ph
}

// gauge is the gauge a phase counts the execution in: "queued",
// "running", or "" (nothing seen yet, or ended).
func (ph phase) gauge() string {
	switch {
	case ph.end != "":
		return ""
	case ph.started:
		return "running"
	case ph.queued:
		return "queued"
	}
	return ""
}

// hasNode reports whether the list ",id,id," holds id.
func hasNode(list, id string) bool {
	if id == "" {
		return false
	}
	for i := 0; ; {
		j := strings.Index(list[i:], id)
		if j < 0 {
			return false
		}
		j += i
		if j > 0 && list[j-1] == ',' && j+len(id) < len(list) && list[j+len(id)] == ',' {
			return true
		}
		i = j + 1
	}
}

// tally is what one attempt at a batch writes: the phases that changed
// and the counter increments, summed per hash field (a batch mostly
// touches a few users, so thousands of increments become tens of
// HINCRBYs). Its maps are cleared, not remade, when the batch is computed
// again.
type tally struct {
	k      keys // the layout of keys.go, built here through name
	phases []phaseWrite
	// The writes of ended phases: field-value pairs per bucket, and the
	// executions' own keys, as MSET's key-value pairs and as DEL's keys.
	hset   [nBuckets][]any
	touch  []any
	moved  []string
	incr   map[hashField]int64
	sets   map[string][]any   // wfs:<user> → workflows first counted here
	inSet  map[hashField]bool // (set, member) pairs in sets
	expire map[string]int64   // minute bucket → EXPIREAT, Unix seconds
	// names holds the keys and fields built so far, so that a user's or
	// a node type's name is built once per batch, not once per event.
	names map[string]string
	buf   []byte
}

type hashField struct{ key, field string }

// phaseWrite is the new phase of the record rec, which was read from at.
type phaseWrite struct {
	rec   int
	value string
	ended bool
	at    stored
}

func newTally(k keys, records int) *tally {
	return &tally{
		k:      k,
		phases: make([]phaseWrite, 0, records),
		incr:   map[hashField]int64{},
		sets:   map[string][]any{},
		inSet:  map[hashField]bool{},
		expire: map[string]int64{},
		names:  map[string]string{},
	}
}

func (t *tally) reset() {
	t.phases = t.phases[:0]
	for i := range t.hset {
		clear(t.hset[i])
		t.hset[i] = t.hset[i][:0]
	}
	clear(t.touch)
	t.touch = t.touch[:0]
	t.moved = t.moved[:0]
	clear(t.incr)
	clear(t.sets)
	clear(t.inSet)
	clear(t.expire)
}

func (t *tally) add(key, field string, v int64) { t.incr[hashField{key, field}] += v }

// name returns the concatenation of parts, allocated once per batch.
func (t *tally) name(parts ...string) string {
	t.buf = t.buf[:0]
	for _, s := range parts {
		t.buf = append(t.buf, s...)
	}
	if s, ok := t.names[string(t.buf)]; ok {
		return s
	}
	s := string(t.buf)
	t.names[s] = s
	return s
}

// count moves the counters by what r, the record rec of the batch, adds
// to old, the phase read from at, and if the phase changes, writes it
// back. An ended phase still in its execution's own key (as a projector
// of the previous layout left it) is moved to a bucket all the same.
func (t *tally) count(rec int, r *record, old phase, at stored) {
	now := phase{
		user:     cmp.Or(old.user, r.user),
		workflow: cmp.Or(old.workflow, r.workflow),
		queued:   old.queued || r.queued,
		started:  old.started || r.started,
		end:      cmp.Or(old.end, r.end),
		nodes:    old.nodes, // the nodes are added below
	}
	dirty := now != old

	// The new phase, built in place: the nodes counted below are appended.
	var b strings.Builder
	size := len(now.user) + len(now.workflow) + len(now.end) + len(old.nodes) + 7
	for _, n := range r.nodes {
		size += len(n.ID) + 1
	}
	b.Grow(size)
	for _, s := range [...]string{now.user, "|", now.workflow, "|", flag(now.queued), "|", flag(now.started), "|", now.end, "|", old.nodes} {
		b.WriteString(s)
	}
	nodesAt := b.Len() - len(old.nodes)

	// Without a user (a rejected event of an execution never seen) there
	// is nobody to count for; the flags wait for an event that names the
	// user.
	if now.user != "" {
		uk := t.name(t.k.ns, "u:", now.user)
		wk := ""
		if now.workflow != "" {
			wk = t.name(t.k.ns, "w:", now.user, ":", now.workflow)
		}
		if old.user == "" {
			t.add(uk, "total", 1)
			if wk != "" {
				t.add(wk, "total", 1)
				t.addWorkflow(now.user, now.workflow)
			}
		}
		// What was counted before (nothing if it had no user) and what is
		// counted now: the gauges move by the difference.
		g0 := ""
		if old.user != "" {
			g0 = old.gauge()
		}
		if g1 := now.gauge(); g0 != g1 {
			if g0 != "" {
				t.add(uk, g0, -1)
			}
			if g1 != "" {
				t.add(uk, g1, 1)
			}
		}
		if now.end != "" && (old.user == "" || old.end == "") {
			t.add(uk, now.end, 1)
			if wk != "" {
				t.add(wk, now.end, 1)
			}
			// The duration and the minute belong to the event that ended it.
			if old.end == "" {
				t.countEnd(r, uk, wk, now.user)
			}
		}
		// Each node is counted once per execution, whatever reports it again.
		for _, n := range r.nodes {
			if hasNode(b.String()[nodesAt:], n.ID) {
				continue
			}
			b.WriteString(n.ID)
			b.WriteByte(',')
			dirty = true
			t.add(uk, t.name("ns:", n.Status), 1)
			if n.Status == "completed" || n.Status == "failed" {
				t.add(uk, "nodes", 1)
				t.add(uk, t.name("nt:", n.Type), 1)
			}
		}
	}
	ended := now.end != ""
	if dirty || ended && at.open {
		t.phases = append(t.phases, phaseWrite{rec: rec, value: b.String(), ended: ended, at: at})
	}
}

// countEnd counts the duration and the minute bucket of r's terminal event,
// for the user's hash uk and the workflow's wk ("" if unknown).
func (t *tally) countEnd(r *record, uk, wk, user string) {
	if r.timed {
		t.add(uk, "dsum", r.durUs)
		t.add(uk, "dn", 1)
		if wk != "" {
			t.add(wk, "dsum", r.durUs)
			t.add(wk, "dn", 1)
			t.add(wk, r.hist, 1)
		}
	}
	if r.minute == "" || r.end == events.KindRejected {
		return
	}
	mk := t.name(t.k.ns, "m:", user, ":", r.minute)
	t.add(mk, "n", 1)
	t.add(mk, r.end, 1)
	if r.timed {
		t.add(mk, "dsum", r.durUs)
		t.add(mk, "dn", 1)
		t.add(mk, r.hist, 1)
	}
	t.expire[mk] = r.expireAt
}

// addWorkflow adds workflow to the set of the user's workflows.
func (t *tally) addWorkflow(user, workflow string) {
	sk := t.name(t.k.ns, "wfs:", user)
	if f := (hashField{sk, workflow}); !t.inSet[f] {
		t.inSet[f] = true
		t.sets[sk] = append(t.sets[sk], workflow)
	}
}

func flag(b bool) string {
	if b {
		return "1"
	}
	return ""
}
