package ingress

import (
	"context"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/bcrypt"

	"github.com/weftdev/weft/events"
	"github.com/weftdev/weft/events/natstest"
	"github.com/weftdev/weft/persistence"
	"github.com/weftdev/weft/persistence/redis"
	"github.com/weftdev/weft/persistence/sqlite"
)

// keyCountingStore counts API key reads.
type keyCountingStore struct {
	*sqlite.Store
	reads atomic.Int64
}

func (c *keyCountingStore) APIKeyByHash(ctx context.Context, hash string) (*persistence.APIKey, error) {
	c.reads.Add(1)
	return c.Store.APIKeyByHash(ctx, hash)
}

// TestAuthLocalLayer checks the in-process layer of credentials: a busy
// key is served from process memory, a revocation in another process
// drops it here at once, and a check that overlapped a revocation keeps
// nothing.
func TestAuthLocalLayer(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	store := &keyCountingStore{Store: storeWithAnn(t)}
	natsURL := natstest.Start(t)
	rdb, err := redis.Connect(ctx, redisURL(t))
	require.NoError(t, err)
	t.Cleanup(func() { _ = rdb.Close() })
	cache := redis.NewCache(rdb, "test:"+newID()+":")
	// Two processes: one store, one Redis, each its own NATS connection.
	open := func() *Auth {
		a, err := NewAuth(AuthConfig{Secret: []byte("0123456789abcdef0123456789abcdef"), BcryptCost: bcrypt.MinCost}, store, cache, slog.New(slog.DiscardHandler), nil)
		require.NoError(t, err)
		nc, err := nats.Connect(natsURL)
		require.NoError(t, err)
		t.Cleanup(nc.Close)
		stop, err := a.Listen(nc)
		require.NoError(t, err)
		t.Cleanup(stop)
		return a
	}
	a, b := open(), open()
	k, secret, err := a.CreateAPIKey(ctx, "01ann", "busy")
	require.NoError(t, err)

	p, err := b.Authenticate(ctx, secret)
	require.NoError(t, err)
	require.Equal(t, "01ann", p.UserID)
	require.EqualValues(t, 1, store.reads.Load())
	// Gone from Redis, still served in process within localAuthTTL.
	require.NoError(t, cache.Del(ctx, "apikey:"+k.Hash))
	for range 100 {
		_, err = b.Authenticate(ctx, secret)
		require.NoError(t, err)
	}
	require.EqualValues(t, 1, store.reads.Load(), "served from the process's own copy")
	// Past localAuthTTL the process looks again.
	b.now = func() time.Time { return time.Now().Add(localAuthTTL + time.Second) }
	_, err = b.Authenticate(ctx, secret)
	require.NoError(t, err)
	require.EqualValues(t, 2, store.reads.Load())
	b.now = time.Now
	_, err = b.Authenticate(ctx, secret)
	require.NoError(t, err)

	// Revoked through the other process while this one is busy with the
	// key: refused here as soon as the word arrives, although this process
	// and Redis had it; it does not take the key back from Redis.
	stop, busy := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(busy)
		for {
			select {
			case <-stop:
				return
			default:
				_, _ = b.Authenticate(ctx, secret)
			}
		}
	}()
	time.Sleep(20 * time.Millisecond)
	require.NoError(t, a.DeleteAPIKey(ctx, "01ann", k.ID))
	revoked := time.Now()
	require.Eventually(t, func() bool {
		_, err := b.Authenticate(ctx, secret)
		return events.ErrorCode(err) == events.CodeUnauthorized
	}, time.Second, time.Millisecond)
	require.Less(t, time.Since(revoked), time.Second, "well within the 2 s a process keeps its own copy")
	time.Sleep(50 * time.Millisecond)
	_, err = b.Authenticate(ctx, secret)
	require.Equal(t, events.CodeUnauthorized, events.ErrorCode(err), "still refused: %v", err)
	close(stop)
	<-busy

	// A check that read a credential while a revocation was heard keeps
	// nothing, in process or in Redis.
	k2, secret2, err := a.CreateAPIKey(ctx, "01ann", "racing")
	require.NoError(t, err)
	heard := b.revocations.Load()
	b.heard("apikey:unrelated")
	b.remember(ctx, "apikey:"+k2.Hash, &Principal{UserID: "01ann", APIKeyID: k2.ID}, time.Hour, heard)
	b.keepLocal("apikey:"+k2.Hash, &Principal{UserID: "01ann", APIKeyID: k2.ID}, time.Now(), heard)
	var p2 Principal
	ok, err := cache.Get(ctx, "apikey:"+k2.Hash, &p2)
	require.NoError(t, err)
	require.False(t, ok, "not written to Redis")
	_, local := b.local.Get("apikey:" + k2.Hash)
	require.False(t, local, "not kept in process")
	_, err = b.Authenticate(ctx, secret2)
	require.NoError(t, err)
}
