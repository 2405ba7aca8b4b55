package main

import (
	"os"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/weftdev/weft/events/natstest"
)

// startNATS runs a standalone nats-server with JetStream, as production
// would have.
func startNATS(t *testing.T) string { return natstest.Start(t) }

// TestServeOnExternalServers runs `weft serve` against NATS, a
// MongoDB-protocol server (FerretDB) and Redis, none of them embedded.
func TestServeOnExternalServers(t *testing.T) {
	t.Parallel()
	redisURL := os.Getenv("WEFT_TEST_REDIS_URL")
	if redisURL == "" {
		redisURL = setup(t).main.RedisURL // another process's Redis, as good as external
	}
	cfg := Config{
		Mode:        ModeServe,
		Addr:        "127.0.0.1:0",
		NATSURL:     startNATS(t),
		MongoURI:    mongoURI(t) + "weft_serve_" + randomHex(t),
		RedisURL:    redisURL,
		RedisPrefix: "test:" + randomHex(t) + ":",
		JWTSecret:   "a secret of thirty-two characters or more",
		Roles:       []string{"ingress"},
		BcryptCost:  4,
	}
	b := start(t, cfg)
	require.Contains(t, b.main.StoreURL, "mongodb://")
	u := b.register(t)
	created := b.call(t, "POST", "/api/workflows", u.Token, exampleWorkflow())
	require.Equal(t, 201, created.Status, string(created.Raw))
	id := created.Body["id"].(string)
	require.Equal(t, 200, b.call(t, "PUT", "/api/workflows/"+id, u.Token, exampleWorkflow()).Status)
	got := b.call(t, "GET", "/api/workflows/"+id, u.Token, nil)
	require.EqualValues(t, 2, got.Body["version"])
	other := b.register(t)
	requireError(t, b.call(t, "GET", "/api/workflows/"+id, other.Token, nil), 404, "not_found", "-")
	ready := b.call(t, "GET", "/readyz", "", nil)
	require.Equal(t, 200, ready.Status, string(ready.Raw))

	// A second serve process on the same servers sees the same data.
	b2 := start(t, cfg)
	require.Equal(t, 200, b2.call(t, "GET", "/api/workflows/"+id, u.Token, nil).Status)
}
