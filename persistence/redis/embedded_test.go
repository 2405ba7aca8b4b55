package redis

import (
	"reflect"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// versions counts the key versions miniredis remembers in database 0.
func versions(t *testing.T, e *Embedded) int {
	t.Helper()
	e.m.Lock()
	defer e.m.Unlock()
	db := reflect.ValueOf(e.m).Elem().FieldByName("dbs").MapIndex(reflect.ValueOf(0))
	require.True(t, db.IsValid(), "miniredis has no database 0")
	v, ok := mapField[uint](db.Elem(), "keyVersion")
	require.True(t, ok, "miniredis no longer has the keyVersion field the prune relies on")
	return len(v)
}

func TestEmbeddedForgetsDeletedKeys(t *testing.T) {
	t.Parallel()
	e, err := StartEmbedded("127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(e.Close)

	// A stream of short-lived keys, as the dashboard's per-execution
	// phases are, and a few that stay.
	for i := range 1000 {
		k := "gone:" + strconv.Itoa(i)
		require.NoError(t, e.m.Set(k, "x"))
		e.m.Del(k)
	}
	for i := range 3 {
		require.NoError(t, e.m.Set("kept:"+strconv.Itoa(i), "x"))
	}
	require.GreaterOrEqual(t, versions(t, e), 1003, "miniredis remembers every key it held")

	require.True(t, forgetDeletedKeys(e.m), "the prune found miniredis's fields")
	require.Equal(t, 3, versions(t, e), "only the live keys' versions remain")
	for i := range 3 {
		v, err := e.m.Get("kept:" + strconv.Itoa(i))
		require.NoError(t, err)
		require.Equal(t, "x", v)
	}
}

// TestCacheRidesOutAnOutage: with Redis gone, reads miss at once instead
// of paying a round trip each, and a delete that failed lands before
// anything is read once Redis is back: a revoked credential is never
// served again from a stale entry.
// embeddedCache is a cache on an embedded server of the test's own.
func embeddedCache(t *testing.T) (*Embedded, *Cache) {
	t.Helper()
	e, err := StartEmbedded("127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(e.Close)
	rdb, err := Connect(t.Context(), e.URL())
	require.NoError(t, err)
	t.Cleanup(func() { _ = rdb.Close() })
	return e, NewCache(rdb, "t:")
}

func TestCacheRidesOutAnOutage(t *testing.T) {
	t.Parallel()
	e, c := embeddedCache(t)
	require.NoError(t, c.Set(t.Context(), "session", "alive", time.Hour))

	e.m.Close() // down, data kept
	require.Error(t, c.Del(t.Context(), "session"))
	start := time.Now()
	for range 100 {
		var v string
		ok, err := c.Get(t.Context(), "other", &v)
		require.False(t, ok)
		require.ErrorIs(t, err, ErrDown)
	}
	require.Less(t, time.Since(start), 100*time.Millisecond, "no round trip while down")

	require.NoError(t, e.m.Restart())
	require.True(t, e.m.Exists("t:session"), "the stale entry is still in Redis")
	require.Eventually(t, func() bool {
		var v string
		ok, err := c.Get(t.Context(), "session", &v)
		return err == nil && !ok
	}, 5*time.Second, 50*time.Millisecond, "the failed delete landed before the read")
	require.False(t, e.m.Exists("t:session"))
}

// TestCacheCloseEndsItsRetries: a delete Redis did not take is retried in
// the background until Close, which waits for the retries to stop (the
// package's goleak check sees any left).
func TestCacheCloseEndsItsRetries(t *testing.T) {
	t.Parallel()
	e, c := embeddedCache(t)
	e.m.Close() // down
	require.Error(t, c.Del(t.Context(), "session"))
	c.mu.Lock()
	retrying := c.retrying
	c.mu.Unlock()
	require.True(t, retrying)
	done := make(chan struct{})
	go func() { c.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return")
	}
	c.Close() // twice is fine
	require.Error(t, c.Del(t.Context(), "other"), "still down")
	c.mu.Lock()
	defer c.mu.Unlock()
	require.False(t, c.retrying, "no retries after Close")
	require.NoError(t, e.m.Restart())
}
