package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// rawResult is the rate of the bare consume → publish → ack loop.
type rawResult struct {
	msgID   bool
	hops    int64
	errors  int64
	elapsed time.Duration
}

func (r rawResult) rate() float64 {
	if r.elapsed <= 0 {
		return 0
	}
	return float64(r.hops) / r.elapsed.Seconds()
}

// rawConfig sizes the raw loop.
type rawConfig struct {
	workers  int           // goroutines handling messages, as the engine's Concurrency
	chains   int           // messages seeded: chains in flight at once
	warmup   time.Duration // run before counting
	duration time.Duration // counted
}

// measureRaw starts an in-process nats-server (JetStream, file storage in a
// temporary directory, loopback, random port) and measures one engine hop
// without the engine: a Consume callback feeds workers; each message
// handled publishes one new message (async, waiting for its PubAck) and
// then acks. It runs the loop twice: with a Nats-Msg-Id on every publish,
// as the engine's task publishes carry, and without one for reference.
func measureRaw(ctx context.Context, cfg rawConfig) ([]rawResult, error) {
	dir, err := os.MkdirTemp("", "weft-bench-raw-*")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)

	srv, err := server.NewServer(&server.Options{
		Host:      "127.0.0.1",
		Port:      -1,
		JetStream: true,
		StoreDir:  dir,
		NoLog:     true,
		NoSigs:    true,
	})
	if err != nil {
		return nil, fmt.Errorf("nats-server: %w", err)
	}
	go srv.Start()
	defer func() {
		srv.Shutdown()
		srv.WaitForShutdown()
	}()
	if !srv.ReadyForConnections(10 * time.Second) {
		return nil, errors.New("nats-server: not ready after 10s")
	}

	var out []rawResult
	for _, withID := range []bool{true, false} {
		if err := ctx.Err(); err != nil {
			return out, err
		}
		r, err := rawLoop(ctx, srv.ClientURL(), cfg, withID)
		if err != nil {
			return out, err
		}
		label := "with Nats-Msg-Id"
		if !withID {
			label = "without Nats-Msg-Id"
		}
		fmt.Printf("  raw JetStream hop %-20s %9.0f hops/s  (%d hops in %.1fs, %d workers, %d chains, %d errors)\n",
			label, r.rate(), r.hops, r.elapsed.Seconds(), cfg.workers, cfg.chains, r.errors)
		out = append(out, r)
	}
	return out, nil
}

// rawLoop runs the loop once, on its own stream and connection.
func rawLoop(ctx context.Context, url string, cfg rawConfig, withID bool) (rawResult, error) {
	res := rawResult{msgID: withID}
	nc, err := nats.Connect(url, nats.Name("weft-bench-raw"))
	if err != nil {
		return res, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return res, err
	}
	name, subject := "BENCH_NOID", "bench.noid"
	if withID {
		name, subject = "BENCH_ID", "bench.id"
	}
	// As the engine's task stream: a work queue on file storage whose
	// duplicate window is a few seconds.
	stream, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name:       name,
		Subjects:   []string{subject},
		Retention:  jetstream.WorkQueuePolicy,
		Storage:    jetstream.FileStorage,
		Duplicates: 5 * time.Second,
	})
	if err != nil {
		return res, fmt.Errorf("create stream: %w", err)
	}
	defer func() { _ = js.DeleteStream(context.Background(), name) }()
	cons, err := stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
		Durable:       "hop",
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       time.Minute,
		MaxAckPending: 4096,
	})
	if err != nil {
		return res, fmt.Errorf("create consumer: %w", err)
	}

	// A payload the size of an engine task ({"e":<execution id>,"n":<node id>}).
	payload := []byte(`{"e":"01JBENCH0000000000000000000","n":"node-1"}`)
	var seq atomic.Uint64
	publish := func() (jetstream.PubAckFuture, error) {
		m := &nats.Msg{Subject: subject, Data: payload}
		if withID {
			return js.PublishMsgAsync(m, jetstream.WithMsgID(fmt.Sprintf("01JBENCH%020d.node-1", seq.Add(1))))
		}
		return js.PublishMsgAsync(m)
	}
	for range cfg.chains {
		f, err := publish()
		if err != nil {
			return res, fmt.Errorf("seed: %w", err)
		}
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return res, fmt.Errorf("seed: %w", err)
		}
	}

	stop := make(chan struct{})
	work := make(chan jetstream.Msg)
	var hops, errs atomic.Int64
	var wg sync.WaitGroup
	for range cfg.workers {
		wg.Go(func() {
			for {
				var m jetstream.Msg
				select {
				case m = <-work:
				case <-stop:
					return
				}
				f, err := publish()
				if err != nil {
					errs.Add(1)
					_ = m.Nak()
					continue
				}
				select {
				case <-f.Ok():
				case <-f.Err():
					errs.Add(1)
					_ = m.Nak()
					continue
				case <-stop:
					return
				}
				if err := m.Ack(); err != nil {
					errs.Add(1)
					continue
				}
				hops.Add(1)
			}
		})
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		select {
		case work <- m:
		case <-stop:
		}
	}, jetstream.PullMaxMessages(2*cfg.workers))
	if err != nil {
		close(stop)
		wg.Wait()
		return res, fmt.Errorf("consume: %w", err)
	}

	sleep(ctx, cfg.warmup)
	h0, e0, t0 := hops.Load(), errs.Load(), time.Now()
	sleep(ctx, cfg.duration)
	res.hops, res.errors, res.elapsed = hops.Load()-h0, errs.Load()-e0, time.Since(t0)

	cc.Stop()
	close(stop)
	wg.Wait()
	return res, ctx.Err()
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
