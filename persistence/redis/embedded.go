package redis

import (
	"reflect"
	"sync"
	"time"
	"unsafe"

	"github.com/alicebob/miniredis/v2"
)

// Embedded is an in-process Redis-protocol server listening on loopback.
type Embedded struct {
	m    *miniredis.Miniredis
	stop chan struct{}
	wg   sync.WaitGroup
}

// StartEmbedded starts miniredis on addr ("127.0.0.1:0" for a free port).
// miniredis only moves its clock when told to, so a goroutine advances it
// with the wall clock every tick; keys then expire in real time, give or
// take the tick (half a second).
func StartEmbedded(addr string) (*Embedded, error) {
	m := miniredis.NewMiniRedis()
	if err := m.StartAddr(addr); err != nil {
		return nil, err
	}
	e := &Embedded{m: m, stop: make(chan struct{})}
	last := time.Now()
	m.SetTime(last)
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		// Every tick visits every key with a TTL, and every key's
		// version, so not too often.
		t := time.NewTicker(500 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-e.stop:
				return
			case now := <-t.C:
				m.SetTime(now)
				m.FastForward(now.Sub(last))
				last = now
				forgetDeletedKeys(m)
			}
		}
	}()
	return e, nil
}

// forgetDeletedKeys bounds the embedded server's memory. miniredis keeps a
// version of every key it ever held, for WATCH, and never forgets one: a
// server that sees a stream of short-lived keys (a dashboard phase or a
// cached status per execution) grows by about 100 bytes per key for as
// long as it runs. It is called at every tick of the clock, twice a
// second: under full load, pruning every 10 s held about 2 MB more of the
// process's heap, and 4% more collections per execution, than pruning at
// every tick. The versions of keys that no longer exist can go: the
// only WATCH in Weft is the projector's, on a batch's keys for well under
// a millisecond. A watched key deleted, pruned and made again within that
// window would read as unchanged, and two projectors of the same
// execution could then both count it; that takes two processes sharing
// one embedded server (each process runs one projector, which applies one
// batch at a time) and a prune landing inside a batch, which pruning at
// every tick makes twenty times likelier than every 10 s. miniredis
// offers no way to prune; it is done under the server's own lock through
// reflection on its unexported fields. It reports false, and does nothing, if a miniredis release
// renames them (TestEmbeddedForgetsDeletedKeys then fails).
func forgetDeletedKeys(m *miniredis.Miniredis) bool {
	m.Lock()
	defer m.Unlock()
	dbs := reflect.ValueOf(m).Elem().FieldByName("dbs")
	if !dbs.IsValid() || dbs.Kind() != reflect.Map {
		return false
	}
	for it := dbs.MapRange(); it.Next(); {
		db := it.Value()
		if db.Kind() != reflect.Pointer || db.IsNil() {
			return false
		}
		keys, ok := mapField[string](db.Elem(), "keys")
		versions, ok2 := mapField[uint](db.Elem(), "keyVersion")
		if !ok || !ok2 {
			return false
		}
		for k := range versions {
			if _, live := keys[k]; !live {
				delete(versions, k)
			}
		}
	}
	return true
}

// mapField reads the map[string]V field name of the struct v.
func mapField[V any](v reflect.Value, name string) (map[string]V, bool) {
	f := v.FieldByName(name)
	if !f.IsValid() || f.Type() != reflect.TypeFor[map[string]V]() || !f.CanAddr() {
		return nil, false
	}
	return *(*map[string]V)(unsafe.Pointer(f.UnsafeAddr())), true
}

// URL is the redis:// URL clients use.
func (e *Embedded) URL() string { return "redis://" + e.m.Addr() }

// Close stops the clock and the server.
func (e *Embedded) Close() {
	close(e.stop)
	e.wg.Wait()
	e.m.Close()
}
