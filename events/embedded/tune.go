// Package embedded tunes the NATS server that `weft dev` runs in its own
// process.
package embedded

import (
	"errors"
	"fmt"
	"reflect"
	"sync"
	"time"
	"unsafe"

	natsserver "github.com/nats-io/nats-server/v2/server"
)

// Tuning is what Tune sets on the file streams of the embedded server.
// Both settings bound the memory the server holds for a stream being
// written: the block it writes is in memory whole, and recent blocks stay
// there for CacheExpire after their last read or write.
type Tuning struct {
	// CacheExpire is how long a block stays in memory after its last read
	// or write; 0 leaves the server's choice. The server's own value is
	// 10 s and cannot be configured (nats-server issue #5740): a stream
	// written at some megabytes a second keeps ten seconds of its writes
	// in memory, which at `weft dev`'s full rate is about 28 MB of the
	// process's heap. At 1 s it is about 8 MB, with no change in
	// throughput measured: the engine's consumers read what was just
	// written, and one that falls behind reads the block again from the
	// file (the OS keeps it in its page cache).
	CacheExpire time.Duration
	// BlockSize is the size at which a stream starts a new block, for the
	// blocks made from then on; 0 leaves the server's choice. The server
	// picks 4 or 8 MB for `weft dev`'s streams (its only other choice is
	// 32 KB, for streams limited to 128 KB or less), and the block being
	// written grows in a buffer from a pool of that size. At 1 MB the
	// process's live heap under full load is about 5 MB smaller, which the
	// collector gets as headroom; the streams make a new file every second
	// or so instead of every few seconds.
	BlockSize uint64
}

// Dev is the tuning of `weft dev`'s own server.
var Dev = Tuning{CacheExpire: time.Second, BlockSize: 1 << 20}

// Tune applies t to the file streams the server's global account holds
// when it is called, for the blocks they have (the expiry) and the ones
// they will make (a stream made later keeps the server's defaults). It
// reports how many streams it changed. The settings are not part of the
// server's API, so they are made through reflection on the server's
// unexported fields, each read or written under the lock the server takes
// for it. A block size outside the server's range is an error, and
// changes nothing. If a release of the server changes one of the fields,
// it returns an error, having changed the streams it reports and no other
// (TestTune then fails); it does not panic.
func Tune(srv *natsserver.Server, t Tuning) (n int, err error) {
	if t.BlockSize > 0 && (t.BlockSize < natsserver.FileStoreMinBlkSize || t.BlockSize > natsserver.FileStoreMaxBlkSize) {
		return 0, fmt.Errorf("embedded nats: a block size of %d is outside the server's %d to %d", t.BlockSize,
			natsserver.FileStoreMinBlkSize, natsserver.FileStoreMaxBlkSize)
	}
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("embedded nats: %v", r)
		}
	}()
	stores, err := fileStores(srv)
	if err != nil {
		return 0, err
	}
	for _, fs := range stores {
		if err := tune(fs, t); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// fileStores are the file stores (server.fileStore values) of the streams
// of the server's global account, by stream name.
func fileStores(srv *natsserver.Server) (map[string]reflect.Value, error) {
	acc := reflect.ValueOf(srv.GlobalAccount()).Elem()
	accMu, err := mutex(acc)
	if err != nil {
		return nil, err
	}
	accMu.RLock()
	jsaPtr, err := field(acc, "js", reflect.Pointer)
	enabled := err == nil && !jsaPtr.IsNil()
	var jsa reflect.Value
	if enabled {
		jsa = jsaPtr.Elem()
	}
	accMu.RUnlock()
	if err != nil {
		return nil, err
	}
	if !enabled {
		return nil, errors.New("embedded nats: jetstream is not enabled")
	}
	jsaMu, err := mutex(jsa)
	if err != nil {
		return nil, err
	}
	streams := map[string]reflect.Value{}
	jsaMu.RLock()
	m, err := field(jsa, "streams", reflect.Map)
	if err == nil {
		for it := m.MapRange(); it.Next(); {
			streams[it.Key().String()] = it.Value()
		}
	}
	jsaMu.RUnlock()
	if err != nil {
		return nil, err
	}
	stores := map[string]reflect.Value{}
	for name, s := range streams {
		store := s.MethodByName("Store")
		if !store.IsValid() || store.Type().NumIn() != 0 || store.Type().NumOut() != 1 {
			return nil, errors.New("embedded nats: a stream has no Store() method")
		}
		fs := store.Call(nil)[0].Elem()
		if fs.Kind() == reflect.Pointer && fs.Type().Elem().Name() == "fileStore" {
			stores[name] = fs.Elem()
		} // else a memory stream
	}
	return stores, nil
}

// tune sets the block size and expiry of the file store fs for new
// blocks, under its lock, and the expiry of each block it has, under the
// block's.
func tune(fs reflect.Value, t Tuning) error {
	mu, err := mutex(fs)
	if err != nil {
		return err
	}
	mu.Lock()
	defer mu.Unlock()
	cfg, err := field(fs, "fcfg", reflect.Struct)
	if err != nil {
		return err
	}
	fcfg, ok := cfg.Addr().Interface().(*natsserver.FileStoreConfig)
	if !ok {
		return errors.New("embedded nats: fileStore.fcfg is not a FileStoreConfig")
	}
	if t.BlockSize > 0 {
		fcfg.BlockSize = t.BlockSize
	}
	if t.CacheExpire <= 0 {
		return nil
	}
	fcfg.CacheExpire = t.CacheExpire
	blks, err := field(fs, "blks", reflect.Slice)
	if err != nil {
		return err
	}
	for i := range blks.Len() {
		mb := blks.Index(i)
		if mb.Kind() != reflect.Pointer || mb.IsNil() {
			return errors.New("embedded nats: fileStore.blks holds no block pointers")
		}
		bmu, err := mutex(mb.Elem())
		if err != nil {
			return err
		}
		cexp, err := field(mb.Elem(), "cexp", reflect.Int64)
		if err != nil || cexp.Type() != reflect.TypeFor[time.Duration]() {
			return errors.New("embedded nats: msgBlock.cexp is not a duration")
		}
		bmu.Lock()
		cexp.SetInt(int64(t.CacheExpire))
		bmu.Unlock()
	}
	return nil
}

// field is the named field of the struct v, addressable and settable
// although unexported, if it is of the kind given.
func field(v reflect.Value, name string, kind reflect.Kind) (reflect.Value, error) {
	f := v.FieldByName(name)
	if !f.IsValid() || !f.CanAddr() || f.Kind() != kind {
		return reflect.Value{}, errors.New("embedded nats: no field " + v.Type().Name() + "." + name + " of kind " + kind.String())
	}
	return reflect.NewAt(f.Type(), unsafe.Pointer(f.UnsafeAddr())).Elem(), nil
}

// mutex is the field mu of the struct v, a sync.RWMutex.
func mutex(v reflect.Value) (*sync.RWMutex, error) {
	f, err := field(v, "mu", reflect.Struct)
	if err != nil {
		return nil, err
	}
	mu, ok := f.Addr().Interface().(*sync.RWMutex)
	if !ok {
		return nil, errors.New("embedded nats: " + v.Type().Name() + ".mu is not a sync.RWMutex")
	}
	return mu, nil
}
