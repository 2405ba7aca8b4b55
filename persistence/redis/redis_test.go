package redis

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// server is a real Redis when WEFT_TEST_REDIS_URL names one, else the
// embedded server.
func server(t *testing.T) (url string, prefix string) {
	t.Helper()
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	prefix = "test:" + hex.EncodeToString(b) + ":"
	if u := os.Getenv("WEFT_TEST_REDIS_URL"); u != "" {
		return u, prefix
	}
	e, err := StartEmbedded("127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(e.Close)
	return e.URL(), prefix
}

func TestCacheRoundTripAndExpiry(t *testing.T) {
	t.Parallel()
	url, prefix := server(t)
	ctx := context.Background()
	rdb, err := Connect(ctx, url)
	require.NoError(t, err)
	t.Cleanup(func() { _ = rdb.Close() })
	c := NewCache(rdb, prefix)

	type value struct{ A string }
	var got value
	ok, err := c.Get(ctx, "k", &got)
	require.NoError(t, err)
	require.False(t, ok)

	require.NoError(t, c.Set(ctx, "k", value{A: "x"}, time.Hour))
	ok, err = c.Get(ctx, "k", &got)
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, "x", got.A)
	require.Equal(t, prefix+"k", c.Key("k"))

	require.NoError(t, c.Del(ctx, "k"))
	ok, _ = c.Get(ctx, "k", &got)
	require.False(t, ok)

	// TTLs expire in real time, also on the embedded server.
	require.NoError(t, c.Set(ctx, "short", value{A: "y"}, 300*time.Millisecond))
	require.Eventually(t, func() bool {
		ok, err := c.Get(ctx, "short", &got)
		return err == nil && !ok
	}, 3*time.Second, 50*time.Millisecond)

	// A value that is not ours to decode is a miss, and is dropped.
	require.NoError(t, rdb.Set(ctx, prefix+"junk", "{not json", time.Hour).Err())
	ok, err = c.Get(ctx, "junk", &got)
	require.NoError(t, err)
	require.False(t, ok)
}

func TestLimiterHoldsAcrossClients(t *testing.T) {
	t.Parallel()
	url, prefix := server(t)
	ctx := context.Background()
	a, err := Connect(ctx, url)
	require.NoError(t, err)
	t.Cleanup(func() { _ = a.Close() })
	b, err := Connect(ctx, url)
	require.NoError(t, err)
	t.Cleanup(func() { _ = b.Close() })
	la, lb := NewLimiter(a, prefix), NewLimiter(b, prefix)

	limit := PerMinute(4)
	for i := 0; i < 4; i++ {
		l := la
		if i%2 == 1 {
			l = lb
		}
		ok, _, err := l.Allow(ctx, "user:1", limit)
		require.NoError(t, err)
		require.True(t, ok, "request %d", i)
	}
	ok, wait, err := lb.Allow(ctx, "user:1", limit)
	require.NoError(t, err)
	require.False(t, ok)
	require.Greater(t, wait, time.Duration(0))
	// Another key has its own budget.
	ok, _, err = la.Allow(ctx, "user:2", limit)
	require.NoError(t, err)
	require.True(t, ok)
}

func TestConnectRefusesBadURLs(t *testing.T) {
	t.Parallel()
	_, err := Connect(context.Background(), "http://nope")
	require.Error(t, err)
	_, err = Connect(context.Background(), "redis://127.0.0.1:1")
	require.Error(t, err)
}

// scriptCounter counts the scripts a client runs.
type scriptCounter struct{ n atomic.Int64 }

func (c *scriptCounter) DialHook(next goredis.DialHook) goredis.DialHook { return next }
func (c *scriptCounter) ProcessHook(next goredis.ProcessHook) goredis.ProcessHook {
	return func(ctx context.Context, cmd goredis.Cmder) error {
		if n := strings.ToLower(cmd.Name()); n == "evalsha" || n == "eval" {
			c.n.Add(1)
		}
		return next(ctx, cmd)
	}
}
func (c *scriptCounter) ProcessPipelineHook(next goredis.ProcessPipelineHook) goredis.ProcessPipelineHook {
	return next
}

// TestLimiterUnderConcurrency: callers that find a key's grant empty
// together share one round trip, and a small budget is still exact.
func TestLimiterUnderConcurrency(t *testing.T) {
	t.Parallel()
	url, prefix := server(t)
	rdb, err := Connect(context.Background(), url)
	require.NoError(t, err)
	t.Cleanup(func() { _ = rdb.Close() })
	counter := &scriptCounter{}
	rdb.AddHook(counter)
	l := NewLimiter(rdb, prefix)

	run := func(key string, limit Limit, n int) (allowed int64) {
		var wg sync.WaitGroup
		var yes atomic.Int64
		start := make(chan struct{})
		for range n {
			wg.Go(func() {
				<-start
				ok, _, err := l.Allow(context.Background(), key, limit)
				assert.NoError(t, err)
				if ok {
					yes.Add(1)
				}
			})
		}
		close(start)
		wg.Wait()
		return yes.Load()
	}
	require.EqualValues(t, 64, run("big", PerMinute(1_000_000), 64))
	require.LessOrEqual(t, counter.n.Load(), int64(4), "64 callers, a handful of refills")

	require.EqualValues(t, 20, run("small", PerMinute(20), 60), "a small budget is exact")
}
