package embedded

import (
	"context"
	"reflect"
	"strconv"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/weftdev/weft/events/natstest"
)

func TestTune(t *testing.T) {
	srv := natstest.StartServer(t)
	_, js := natstest.Connect(t, srv.ClientURL())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// A byte limit this small makes the server cut 32 KB blocks: the file
	// stream has several before the change, and makes new ones after it.
	for _, cfg := range []jetstream.StreamConfig{
		{Name: "FILE", Subjects: []string{"file.>"}, MaxBytes: 120_000},
		{Name: "MEM", Subjects: []string{"mem.>"}, Storage: jetstream.MemoryStorage},
	} {
		if _, err := js.CreateStream(ctx, cfg); err != nil {
			t.Fatal(err)
		}
	}
	payload := make([]byte, 1000)
	publish := func(from, to int) error {
		for i := from; i < to; i++ {
			if _, err := js.Publish(ctx, "file."+strconv.Itoa(i), payload); err != nil {
				return err
			}
		}
		return nil
	}
	check := func(want time.Duration) {
		t.Helper()
		got := blockExpiries(t, srv, "FILE")
		if len(got) < 2 {
			t.Fatalf("%d blocks, want several", len(got))
		}
		for i, d := range got {
			if d != want {
				t.Fatalf("block %d of %d expires its cache after %v, want %v", i, len(got), d, want)
			}
		}
	}
	if err := publish(0, 100); err != nil {
		t.Fatal(err)
	}
	check(10 * time.Second) // the server's default
	before := len(blockExpiries(t, srv, "FILE"))

	// The blocks the stream has; the block size is left alone.
	n, err := Tune(srv, Tuning{CacheExpire: 700 * time.Millisecond})
	if err != nil {
		t.Fatalf("Tune: %v (a nats-server release moved a field it sets)", err)
	}
	if n != 1 {
		t.Fatalf("changed %d streams, want the 1 file stream", n)
	}
	check(700 * time.Millisecond)

	for _, size := range []uint64{1000, 64 << 20} {
		if _, err := Tune(srv, Tuning{BlockSize: size}); err == nil {
			t.Fatalf("a block size of %d was taken", size)
		}
	}
	if got := blockSize(t, srv, "FILE"); got != 32_000 {
		t.Fatalf("block size %d, want the server's 32000", got)
	}

	// Changed again while the stream is written to (the race detector
	// watches); every block made since, and after, has the new expiry and
	// size.
	written := make(chan error, 1)
	go func() { written <- publish(100, 300) }()
	if _, err := Tune(srv, Tuning{CacheExpire: 600 * time.Millisecond, BlockSize: 96_000}); err != nil {
		t.Fatal(err)
	}
	if err := <-written; err != nil {
		t.Fatal(err)
	}
	if err := publish(300, 500); err != nil { // every block older than this is gone
		t.Fatal(err)
	}
	check(600 * time.Millisecond)
	if got := blockSize(t, srv, "FILE"); got != 96_000 {
		t.Fatalf("block size %d, want 96000", got)
	}
	if after := len(blockExpiries(t, srv, "FILE")); after >= before {
		t.Fatalf("%d blocks of 96 KB for as many bytes as %d blocks of 32 KB held", after, before)
	}
}

// blockSize reads back the size at which a stream starts a new block.
func blockSize(t *testing.T, srv *natsserver.Server, name string) uint64 {
	t.Helper()
	fs, unlock := lockedStore(t, srv, name)
	defer unlock()
	cfg, err := field(fs, "fcfg", reflect.Struct)
	if err != nil {
		t.Fatal(err)
	}
	return cfg.Addr().Interface().(*natsserver.FileStoreConfig).BlockSize
}

// lockedStore is a stream's file store, read-locked until unlock.
func lockedStore(t *testing.T, srv *natsserver.Server, name string) (fs reflect.Value, unlock func()) {
	t.Helper()
	stores, err := fileStores(srv)
	if err != nil {
		t.Fatal(err)
	}
	fs, ok := stores[name]
	if !ok {
		t.Fatalf("no file store for %s", name)
	}
	mu, err := mutex(fs)
	if err != nil {
		t.Fatal(err)
	}
	mu.RLock()
	return fs, mu.RUnlock
}

// blockExpiries reads back the cache expiry of each block of a stream.
func blockExpiries(t *testing.T, srv *natsserver.Server, name string) []time.Duration {
	t.Helper()
	fs, unlock := lockedStore(t, srv, name)
	defer unlock()
	blks, err := field(fs, "blks", reflect.Slice)
	if err != nil {
		t.Fatal(err)
	}
	var out []time.Duration
	for i := range blks.Len() {
		mb := blks.Index(i).Elem()
		bmu, err := mutex(mb)
		if err != nil {
			t.Fatal(err)
		}
		cexp, err := field(mb, "cexp", reflect.Int64)
		if err != nil {
			t.Fatal(err)
		}
		bmu.RLock()
		out = append(out, time.Duration(cexp.Int()))
		bmu.RUnlock()
	}
	return out
}
