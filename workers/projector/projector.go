package projector

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	goredis "github.com/redis/go-redis/v9"

	"github.com/weftdev/weft/events"
)

// Config tunes a Projector. The zero value of every field means the
// default given beside it.
type Config struct {
	// Prefix starts every key the projector writes, so deployments and
	// tests can share a Redis server.
	Prefix string
	// Log receives what goes wrong; discarded when nil.
	Log *slog.Logger
	// BatchSize is the most events applied in one Redis transaction.
	// Default 256.
	BatchSize int
	// OpenTTL is how long an execution's phase outlives its last
	// event while the execution is open: it must outlast the longest
	// execution. Default 7 days.
	OpenTTL time.Duration
	// DoneTTL is how long, at least, an ended execution's phase is kept,
	// to recognise redeliveries (the consumer's AckWait is 2 s) and events
	// that arrive after the end; in whole seconds. It is also the width of
	// the buckets ended phases are kept in, so a phase is kept between
	// once and twice DoneTTL, and every projector on a prefix must have
	// the same. Default 5 s: at thousands of executions a second, every
	// second of it is thousands of phases (about 200 bytes each in Redis).
	// It must exceed the AckWait, plus the time a batch spends in a
	// projector's hands, plus the difference between projectors' clocks;
	// at least twice the AckWait.
	DoneTTL time.Duration
	// Linger is the longest a batch waits to fill before it is applied.
	// Default 50 ms: a batch costs a few round trips whatever its size,
	// and sums its increments per counter, so fuller batches cost far
	// less per event, and a dashboard does not notice.
	Linger time.Duration
	// CheckEvery is how often an idle projector checks that the counters
	// are still there. Default 2 s.
	CheckEvery time.Duration
	// MetricsHorizon is the age beyond which a finished execution is not
	// written to a per-minute bucket. Default 62 minutes (Metrics reads 61).
	MetricsHorizon time.Duration
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// defaultDoneTTL is Config.DoneTTL's default, above the consumer's
// AckWait (events.ProjectorConsumer) with room for a batch's retries.
const defaultDoneTTL = 5 * time.Second

func (c Config) withDefaults() Config {
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	if c.BatchSize <= 0 {
		c.BatchSize = 256
	}
	if c.OpenTTL <= 0 {
		c.OpenTTL = 7 * 24 * time.Hour
	}
	if c.Linger <= 0 {
		c.Linger = 50 * time.Millisecond
	}
	if c.DoneTTL <= 0 {
		c.DoneTTL = defaultDoneTTL
	}
	if c.CheckEvery <= 0 {
		c.CheckEvery = 2 * time.Second
	}
	if c.MetricsHorizon <= 0 {
		c.MetricsHorizon = 62 * time.Minute
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// Projector consumes WEFT_EVENTS and keeps the dashboard counters; it
// embeds the Reader that serves them. Any number of processes may run one
// on the same Redis prefix: they share the durable consumer.
type Projector struct {
	*Reader
	js  jetstream.JetStream
	rdb goredis.UniversalClient
	cfg Config
	k   keys
	// conflicts counts the batches computed again because another writer
	// changed what they read.
	conflicts atomic.Int64
}

// New returns a projector with the default configuration.
func New(js jetstream.JetStream, rdb goredis.UniversalClient, prefix string, log *slog.Logger) *Projector {
	return NewWithConfig(js, rdb, Config{Prefix: prefix, Log: log})
}

// NewWithConfig returns a projector configured by cfg.
func NewWithConfig(js jetstream.JetStream, rdb goredis.UniversalClient, cfg Config) *Projector {
	cfg = cfg.withDefaults()
	r := NewReader(rdb, cfg.Prefix)
	r.now = cfg.Now
	return &Projector{Reader: r, js: js, rdb: rdb, cfg: cfg, k: newKeys(cfg.Prefix)}
}

// errRebuild ends a consuming session because the counters are gone.
var errRebuild = errors.New("projector: counters missing, rebuild")

// Run consumes events until ctx is done, then drains: the messages in
// hand are applied and acked before it returns nil. Failures of NATS or
// Redis are logged and retried, never returned: the projector outlives
// both.
func (p *Projector) Run(ctx context.Context) error {
	backoff := newBackoff()
	for {
		began := time.Now()
		err := p.ensureBuilt(ctx)
		if err == nil {
			err = p.session(ctx)
		}
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, errRebuild) {
			continue
		}
		if time.Since(began) > time.Minute {
			backoff.reset() // it worked a while: this is a new failure
		}
		p.cfg.Log.Warn("projector: retrying", "err", err)
		if !sleep(ctx, backoff.next()) {
			return nil
		}
	}
}

// ensureBuilt returns once the marker is present, rebuilding first when
// it is not. One projector rebuilds, elected by the lock; the others wait
// for the marker.
func (p *Projector) ensureBuilt(ctx context.Context) error {
	for {
		n, err := p.rdb.Exists(ctx, p.k.marker()).Result()
		if err != nil {
			return fmt.Errorf("check marker: %w", err)
		}
		if n == 1 {
			return nil
		}
		token := randomToken()
		// The lock's TTL bounds how long a projector that died mid-rebuild
		// holds up the others.
		ok, err := p.rdb.SetNX(ctx, p.k.lock(), token, time.Minute).Result()
		if err != nil {
			return fmt.Errorf("take rebuild lock: %w", err)
		}
		if ok {
			err := p.rebuild(ctx)
			p.unlock(token)
			return err
		}
		if !sleep(ctx, 200*time.Millisecond) {
			return ctx.Err()
		}
	}
}

// rebuild sweeps what is left of the counters, replaces the durable
// consumer by one that delivers the stream from its start, and sets the
// marker. Appliers refuse batches until the marker is back, so nothing is
// counted into the keyspace while it is swept.
func (p *Projector) rebuild(ctx context.Context) error {
	if n, err := p.rdb.Exists(ctx, p.k.marker()).Result(); err != nil || n == 1 {
		return err // another projector finished a rebuild meanwhile
	}
	p.cfg.Log.Info("projector: rebuilding the dashboard counters from the event stream")
	if err := p.sweep(ctx); err != nil {
		return fmt.Errorf("sweep: %w", err)
	}
	err := p.js.DeleteConsumer(ctx, events.StreamEvents, events.ConsumerProjector)
	if err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return fmt.Errorf("delete consumer: %w", err)
	}
	cc := events.ProjectorConsumer()
	cc.DeliverPolicy = jetstream.DeliverAllPolicy // replay is the point; say so here too
	if _, err := p.js.CreateOrUpdateConsumer(ctx, events.StreamEvents, cc); err != nil {
		return fmt.Errorf("create consumer: %w", err)
	}
	return p.rdb.Set(ctx, p.k.marker(), p.cfg.Now().UTC().Format(time.RFC3339), 0).Err()
}

// sweep deletes every projector key but the lock, on every master of a
// cluster.
func (p *Projector) sweep(ctx context.Context) error {
	if c, ok := p.rdb.(*goredis.ClusterClient); ok {
		return c.ForEachMaster(ctx, func(ctx context.Context, n *goredis.Client) error {
			return p.sweepOne(ctx, n)
		})
	}
	return p.sweepOne(ctx, p.rdb)
}

func (p *Projector) sweepOne(ctx context.Context, rdb goredis.UniversalClient) error {
	var cursor uint64
	for {
		found, next, err := rdb.Scan(ctx, cursor, p.k.pattern(), 1000).Result()
		if err != nil {
			return err
		}
		del := found[:0]
		for _, k := range found {
			if k != p.k.lock() {
				del = append(del, k)
			}
		}
		if len(del) > 0 {
			if err := rdb.Unlink(ctx, del...).Err(); err != nil {
				return err
			}
		}
		if next == 0 {
			return nil
		}
		cursor = next
	}
}

// unlock releases the rebuild lock if it is still ours.
func (p *Projector) unlock(token string) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = unlockScript.Run(ctx, p.rdb, []string{p.k.lock()}, token).Err()
}

var unlockScript = goredis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`)

// session consumes until ctx is done (nil, after draining), the counters
// go missing (errRebuild) or the consumer ends (an error).
func (p *Projector) session(ctx context.Context) error {
	cons, err := p.js.CreateOrUpdateConsumer(ctx, events.StreamEvents, events.ProjectorConsumer())
	if err != nil {
		return fmt.Errorf("consumer %s: %w", events.ConsumerProjector, err)
	}
	size := p.cfg.BatchSize
	// The callback only hands messages over; one goroutine batches and
	// applies them, so there is one transaction in flight per process and
	// no goroutine per event. Twice a batch in the client keeps the next
	// batch ready while one is applied.
	in := make(chan item, 2*size)
	cc, err := cons.Consume(func(m jetstream.Msg) { in <- decodeItem(m) },
		jetstream.PullMaxMessages(2*size),
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			if !errors.Is(err, jetstream.ErrNoHeartbeat) {
				p.cfg.Log.Debug("projector: consume", "err", err)
			}
		}))
	if err != nil {
		return fmt.Errorf("consume: %w", err)
	}
	closed := cc.Closed()
	// Applying outlives ctx: a drain applies what it holds.
	actx := context.WithoutCancel(ctx)
	check := time.NewTicker(p.cfg.CheckEvery)
	defer check.Stop()
	batch := make([]item, 0, size)
	applyBatch := func() error {
		err := p.apply(actx, batch)
		clear(batch)
		batch = batch[:0]
		return err
	}
	// abandon stops the consumer and gives back what it holds: after a
	// rebuild those messages come again from the new consumer.
	abandon := func(err error) error {
		cc.Stop()
		for {
			select {
			case it := <-in:
				_ = it.m.Nak()
			case <-closed:
				for len(in) > 0 {
					_ = (<-in).m.Nak()
				}
				return err
			}
		}
	}
	for {
		select {
		case it := <-in:
			batch = append(batch, it)
			// Gather for up to Linger: a batch has a fixed cost (its round
			// trips), so fewer, fuller batches cost far less.
			linger := time.NewTimer(p.cfg.Linger)
		fill:
			for len(batch) < size {
				select {
				case it := <-in:
					batch = append(batch, it)
				case <-linger.C:
					break fill
				case <-ctx.Done():
					break fill
				}
			}
			linger.Stop()
			if err := applyBatch(); err != nil {
				return abandon(err)
			}
		case <-check.C:
			n, err := p.rdb.Exists(actx, p.k.marker()).Result()
			if err == nil && n == 0 {
				return abandon(errRebuild)
			}
		case <-closed:
			// Stopped under us: the consumer was deleted (a rebuild by
			// another projector) or the connection closed.
			for len(in) > 0 {
				_ = (<-in).m.Nak()
			}
			return errors.New("projector: consumer closed")
		case <-ctx.Done():
			cc.Drain()
			for {
				select {
				case it := <-in:
					batch = append(batch, it)
					if len(batch) == size {
						if err := applyBatch(); err != nil {
							return abandon(err)
						}
					}
				case <-closed:
					for len(in) > 0 && len(batch) < size {
						batch = append(batch, <-in)
					}
					if len(batch) > 0 {
						if err := applyBatch(); err != nil {
							return abandon(err)
						}
					}
					if len(in) > 0 {
						continue
					}
					return nil
				}
			}
		}
	}
}

// item is a message and its event, decoded in the consumer's callback so
// that decoding the next batch overlaps applying this one.
type item struct {
	m   jetstream.Msg
	ev  wireEvent
	err error
}

func decodeItem(m jetstream.Msg) item {
	it := item{m: m}
	if it.err = decodeEvent(m.Data(), &it.ev); it.err == nil && it.ev.ExecutionID == "" {
		it.err = errors.New("no execution id")
	}
	return it
}

// apply counts a batch in one transaction and acks it. A message that is
// not an event we count is acked (or terminated, if unreadable) without
// being applied. On a Redis error nothing is acked: the batch is given
// back.
func (p *Projector) apply(ctx context.Context, batch []item) error {
	evs := make([]wireEvent, 0, len(batch))
	for _, it := range batch {
		if it.err != nil {
			p.cfg.Log.Warn("projector: unreadable event dropped", "subject", it.m.Subject(), "err", it.err)
			_ = it.m.Term()
			continue
		}
		evs = append(evs, it.ev)
	}
	if err := p.applyEvents(ctx, evs); err != nil {
		if !errors.Is(err, errRebuild) {
			err = fmt.Errorf("apply %d events: %w", len(evs), err)
		}
		// Given back for redelivery now rather than after AckWait.
		for _, it := range batch {
			_ = it.m.Nak()
		}
		return err
	}
	for _, it := range batch {
		if it.err == nil {
			_ = it.m.Ack()
		}
	}
	return nil
}

func randomToken() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// sleep waits d or until ctx is done, reporting whether it waited all of d.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

type backoff struct{ d time.Duration }

func newBackoff() *backoff { return &backoff{d: 100 * time.Millisecond} }

func (b *backoff) next() time.Duration {
	d := b.d
	b.d = min(2*b.d, 5*time.Second)
	return d
}

func (b *backoff) reset() { b.d = 100 * time.Millisecond }
