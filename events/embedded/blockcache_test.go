package embedded

import (
	"context"
	"reflect"
	"strconv"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/weftdev/weft/events/natstest"
)

func TestShortenBlockCache(t *testing.T) {
	srv := natstest.StartServer(t)
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// A byte limit this small makes the server cut 32 KB blocks, so a few
	// hundred KB written make new blocks after the change.
	for _, cfg := range []jetstream.StreamConfig{
		{Name: "FILE", Subjects: []string{"file.>"}, MaxBytes: 100 << 10},
		{Name: "MEM", Subjects: []string{"mem.>"}, Storage: jetstream.MemoryStorage},
	} {
		if _, err := js.CreateStream(ctx, cfg); err != nil {
			t.Fatal(err)
		}
	}
	n, err := ShortenBlockCache(srv, 700*time.Millisecond)
	if err != nil {
		t.Fatalf("ShortenBlockCache: %v (a nats-server release moved a field it sets)", err)
	}
	if n != 1 {
		t.Fatalf("changed %d streams, want the 1 file stream", n)
	}
	payload := make([]byte, 1000)
	for i := range 300 {
		if _, err := js.Publish(ctx, "file."+strconv.Itoa(i), payload); err != nil {
			t.Fatal(err)
		}
	}
	got := blockExpiries(t, srv, "FILE")
	if len(got) < 2 {
		t.Fatalf("%d blocks, want several to check new ones", len(got))
	}
	for i, d := range got {
		if d != 700*time.Millisecond {
			t.Errorf("block %d expires its cache after %v, want 700ms", i, d)
		}
	}
}

// blockExpiries reads back the cache expiry of each block of a stream.
func blockExpiries(t *testing.T, srv *natsserver.Server, name string) []time.Duration {
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
	defer mu.RUnlock()
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
