package ingress

import (
	"context"
	"log/slog"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/bcrypt"

	"github.com/weftdev/weft/events"
	"github.com/weftdev/weft/persistence/redis"
)

// TestForgedCacheEntriesAreRefused: whoever can write to Redis cannot say
// who a caller is. A principal cached without this deployment's MAC, or
// moved to another credential's key, is ignored and the store decides.
func TestForgedCacheEntriesAreRefused(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	store := &keyCountingStore{Store: storeWithAnn(t)}
	rdb, err := redis.Connect(ctx, redisURL(t))
	require.NoError(t, err)
	t.Cleanup(func() { _ = rdb.Close() })
	cache := redis.NewCache(rdb, "test:"+newID()+":")
	newAuth := func(secret string) *Auth {
		a, err := NewAuth(AuthConfig{Secret: []byte(secret), BcryptCost: bcrypt.MinCost}, store, cache, slog.New(slog.DiscardHandler), nil)
		require.NoError(t, err)
		return a
	}
	a := newAuth("0123456789abcdef0123456789abcdef")
	forge := func(key, value string) {
		require.NoError(t, cache.Client().Set(ctx, cache.Key(key), value, 0).Err())
	}

	// A key no one created, with an entry that names Ann.
	invented := APIKeyPrefix + "invented-by-whoever-writes-to-redis"
	forge("apikey:"+hashSecret(invented), `{"userId":"01ann"}`)
	_, err = a.Authenticate(ctx, invented)
	require.True(t, events.ErrorCode(err) == events.CodeUnauthorized, "%v", err)

	// A genuine entry is served from Redis.
	_, secret, err := a.CreateAPIKey(ctx, "01ann", "real")
	require.NoError(t, err)
	_, err = a.Authenticate(ctx, secret)
	require.NoError(t, err)
	reads := store.reads.Load()
	_, err = a.Authenticate(ctx, secret)
	require.NoError(t, err)
	require.Equal(t, reads, store.reads.Load(), "served from Redis")

	// Moved under another credential's key, it fails its MAC.
	genuine, err := cache.Client().Get(ctx, cache.Key("apikey:"+hashSecret(secret))).Result()
	require.NoError(t, err)
	forge("apikey:"+hashSecret(invented), genuine)
	_, err = a.Authenticate(ctx, invented)
	require.True(t, events.ErrorCode(err) == events.CodeUnauthorized, "%v", err)

	// Changed to name someone else, it fails its MAC.
	forge("apikey:"+hashSecret(secret), `{"userId":"01bob","mac":"`+genuine[len(genuine)-46:len(genuine)-2]+`"}`)
	p, err := a.Authenticate(ctx, secret)
	require.NoError(t, err)
	require.Equal(t, "01ann", p.UserID, "the store decided")

	// A deployment with another secret does not take this one's entries.
	b := newAuth("another secret of at least 32 bytes!!")
	reads = store.reads.Load()
	_, err = b.Authenticate(ctx, secret)
	require.NoError(t, err)
	require.Equal(t, reads+1, store.reads.Load())
}
