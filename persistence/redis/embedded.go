package redis

import (
	"sync"
	"time"

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
		// Every tick visits every key with a TTL, so not too often.
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
			}
		}
	}()
	return e, nil
}

// URL is the redis:// URL clients use.
func (e *Embedded) URL() string { return "redis://" + e.m.Addr() }

// Close stops the clock and the server.
func (e *Embedded) Close() {
	close(e.stop)
	e.wg.Wait()
	e.m.Close()
}
