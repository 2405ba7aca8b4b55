package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/require"
)

func TestRegisterAndLogin(t *testing.T) {
	t.Parallel()
	b := setup(t)
	u := b.register(t)

	me := b.call(t, "GET", "/api/auth/me", u.Token, nil)
	require.Equal(t, 200, me.Status)
	require.Equal(t, map[string]any{"id": u.ID, "email": u.Email, "name": "Ada"}, me.Body)

	login := b.call(t, "POST", "/api/auth/login", "", map[string]any{"email": strings.ToUpper(u.Email), "password": u.Password})
	require.Equal(t, 200, login.Status, string(login.Raw))
	require.NotEmpty(t, login.Body["token"])
	require.NotEmpty(t, login.Body["refreshToken"])
	require.EqualValues(t, 900, login.Body["expiresIn"])

	requireError(t, b.call(t, "POST", "/api/auth/login", "", map[string]any{"email": u.Email, "password": "wrong password"}), 401, "unauthorized", "-")
	requireError(t, b.call(t, "POST", "/api/auth/login", "", map[string]any{"email": "nobody@example.com", "password": "whatever1"}), 401, "unauthorized", "-")
	requireError(t, b.call(t, "POST", "/api/auth/register", "", map[string]any{"email": u.Email, "password": "another password", "name": "Bob"}), 409, "conflict", "-")
}

func TestRegisterRejectsBadInput(t *testing.T) {
	t.Parallel()
	b := setup(t)
	cases := []struct {
		name   string
		body   any
		status int
		code   string
		path   string
	}{
		{"malformed JSON", `{"email": "a@b.c",`, 400, "validation_failed", ""},
		{"not an object", `[1,2]`, 400, "validation_failed", ""},
		{"empty body", ``, 400, "validation_failed", ""},
		{"wrong type", map[string]any{"email": 5, "password": "long enough", "name": "A"}, 400, "validation_failed", "email"},
		{"unknown field", map[string]any{"email": "a@b.co", "password": "long enough", "name": "A", "admin": true}, 400, "validation_failed", "admin"},
		{"missing email", map[string]any{"password": "long enough", "name": "A"}, 400, "validation_failed", "email"},
		{"bad email", map[string]any{"email": "not-an-email", "password": "long enough", "name": "A"}, 400, "validation_failed", "email"},
		{"short password", map[string]any{"email": "a@b.co", "password": "short", "name": "A"}, 400, "validation_failed", "password"},
		{"long password", map[string]any{"email": "a@b.co", "password": strings.Repeat("p", 73), "name": "A"}, 400, "validation_failed", "password"},
		{"missing name", map[string]any{"email": "a@b.co", "password": "long enough"}, 400, "validation_failed", "name"},
		{"trailing data", `{"email":"a@b.co","password":"long enough","name":"A"} {}`, 400, "validation_failed", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res := b.call(t, "POST", "/api/auth/register", "", tc.body)
			requireError(t, res, tc.status, tc.code, tc.path)
		})
	}
}

func TestBodyLimitsAndContentType(t *testing.T) {
	t.Parallel()
	b := setup(t)
	// A body past the limit is refused as soon as its length is known. The
	// server may close before a client has written all of it, so this
	// speaks HTTP on a raw connection and reads the answer.
	conn, err := net.Dial("tcp", strings.TrimPrefix(b.url, "http://"))
	require.NoError(t, err)
	defer conn.Close()
	_, err = fmt.Fprintf(conn, "POST /api/auth/register HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n{\"name\":\"", 2<<20)
	require.NoError(t, err)
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	require.NoError(t, err)
	raw, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	require.Equal(t, 413, res.StatusCode, string(raw))
	require.Contains(t, string(raw), `"code":"payload_too_large"`)

	plain := b.call(t, "POST", "/api/auth/login", "", `email=a`, "Content-Type", "application/x-www-form-urlencoded")
	requireError(t, plain, 415, "unsupported_media_type", "-")
	requireError(t, b.call(t, "GET", "/nowhere", "", nil), 404, "not_found", "-")
	u := b.register(t)
	requireError(t, b.call(t, "GET", "/api/nowhere", u.Token, nil), 404, "not_found", "-")
	requireError(t, b.call(t, "GET", "/api/nowhere", "", nil), 401, "unauthorized", "-")
}

func TestRefreshTokenWorksOnce(t *testing.T) {
	t.Parallel()
	b := setup(t)
	u := b.register(t)
	first := b.call(t, "POST", "/api/auth/refresh", "", map[string]any{"refreshToken": u.Refresh})
	require.Equal(t, 200, first.Status, string(first.Raw))
	require.NotEqual(t, u.Refresh, first.Body["refreshToken"])
	require.Equal(t, 200, b.call(t, "GET", "/api/auth/me", first.Body["token"].(string), nil).Status)

	requireError(t, b.call(t, "POST", "/api/auth/refresh", "", map[string]any{"refreshToken": "garbage"}), 401, "unauthorized", "-")
	requireError(t, b.call(t, "POST", "/api/auth/refresh", "", map[string]any{}), 400, "validation_failed", "refreshToken")
	// A made-up token naming the session ends nothing.
	sid, _, _ := strings.Cut(u.Refresh, ".")
	requireError(t, b.call(t, "POST", "/api/auth/refresh", "", map[string]any{"refreshToken": sid + ".made.up"}), 401, "unauthorized", "-")
	require.Equal(t, 200, b.call(t, "GET", "/api/auth/me", first.Body["token"].(string), nil).Status)

	// The used token, replayed, ends the whole session: its access tokens
	// and its newer refresh token stop working.
	requireError(t, b.call(t, "POST", "/api/auth/refresh", "", map[string]any{"refreshToken": u.Refresh}), 401, "unauthorized", "-")
	requireError(t, b.call(t, "GET", "/api/auth/me", first.Body["token"].(string), nil), 401, "unauthorized", "-")
	requireError(t, b.call(t, "GET", "/api/auth/me", u.Token, nil), 401, "unauthorized", "-")
	requireError(t, b.call(t, "POST", "/api/auth/refresh", "", map[string]any{"refreshToken": first.Body["refreshToken"]}), 401, "unauthorized", "-")

	// Two racing refreshes with one token: exactly one wins (the losers
	// replay a used token, and so end the session after it).
	next := b.register(t).Refresh
	var wg sync.WaitGroup
	statuses := make([]int, 4)
	for i := range statuses {
		wg.Add(1)
		go func() {
			defer wg.Done()
			statuses[i] = b.call(t, "POST", "/api/auth/refresh", "", map[string]any{"refreshToken": next}).Status
		}()
	}
	wg.Wait()
	wins := 0
	for _, s := range statuses {
		if s == 200 {
			wins++
		} else {
			require.Equal(t, 401, s)
		}
	}
	require.Equal(t, 1, wins)
}

func TestLogoutEndsTheSession(t *testing.T) {
	t.Parallel()
	b := setup(t)
	u := b.register(t)
	require.Equal(t, 204, b.call(t, "POST", "/api/auth/logout", u.Token, nil).Status)
	requireError(t, b.call(t, "GET", "/api/auth/me", u.Token, nil), 401, "unauthorized", "-")
	requireError(t, b.call(t, "POST", "/api/auth/refresh", "", map[string]any{"refreshToken": u.Refresh}), 401, "unauthorized", "-")
}

func TestBadTokensAreRefused(t *testing.T) {
	t.Parallel()
	b := setup(t)
	u := b.register(t)
	secret, err := os.ReadFile(filepath.Join(b.dir, "jwt.secret"))
	require.NoError(t, err)

	claims := func(mut func(jwt.MapClaims)) jwt.MapClaims {
		var parsed jwt.MapClaims
		_, _, err := jwt.NewParser().ParseUnverified(u.Token, &parsed)
		require.NoError(t, err)
		if mut != nil {
			mut(parsed)
		}
		return parsed
	}
	sign := func(c jwt.MapClaims, key []byte) string {
		s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString(key)
		require.NoError(t, err)
		return s
	}
	none, err := jwt.NewWithClaims(jwt.SigningMethodNone, claims(nil)).SignedString(jwt.UnsafeAllowNoneSignatureType)
	require.NoError(t, err)
	parts := strings.Split(u.Token, ".")
	tampered := parts[0] + "." + strings.TrimRight(parts[1], "=") + "x." + parts[2]
	hs512, err := jwt.NewWithClaims(jwt.SigningMethodHS512, claims(nil)).SignedString(secret)
	require.NoError(t, err)

	require.Equal(t, 200, b.call(t, "GET", "/api/auth/me", sign(claims(nil), secret), nil).Status, "a token signed right must pass")
	cases := map[string]string{
		"alg none":        none,
		"other algorithm": hs512,
		"wrong signature": sign(claims(nil), []byte("another secret of at least 32 bytes!")),
		"expired":         sign(claims(func(c jwt.MapClaims) { c["exp"] = time.Now().Add(-time.Minute).Unix() }), secret),
		"no exp":          sign(claims(func(c jwt.MapClaims) { delete(c, "exp") }), secret),
		"wrong issuer":    sign(claims(func(c jwt.MapClaims) { c["iss"] = "someone" }), secret),
		"wrong audience":  sign(claims(func(c jwt.MapClaims) { c["aud"] = "other" }), secret),
		"other user":      sign(claims(func(c jwt.MapClaims) { c["sub"] = "01jother" }), secret),
		"tampered":        tampered,
		"garbage":         "not.a.token",
		"unknown api key": "weft_nope",
	}
	for name, tok := range cases {
		t.Run(name, func(t *testing.T) {
			requireError(t, b.call(t, "GET", "/api/auth/me", tok, nil), 401, "unauthorized", "-")
		})
	}
	requireError(t, b.call(t, "GET", "/api/auth/me", "", nil), 401, "unauthorized", "-")
	requireError(t, b.call(t, "GET", "/api/auth/me", "", nil, "Authorization", "Basic Zm9vOmJhcg=="), 401, "unauthorized", "-")
}

func TestAPIKeys(t *testing.T) {
	t.Parallel()
	b := setup(t)
	u := b.register(t)
	created := b.call(t, "POST", "/api/auth/api-keys", u.Token, map[string]any{"name": "ci"})
	require.Equal(t, 201, created.Status, string(created.Raw))
	key := created.Body["key"].(string)
	require.True(t, strings.HasPrefix(key, created.Body["prefix"].(string)))
	for _, f := range []string{"id", "name", "key", "prefix", "createdAt"} {
		require.Contains(t, created.Body, f)
	}

	list := b.call(t, "GET", "/api/auth/api-keys", key, nil)
	require.Equal(t, 200, list.Status)
	items := list.Body["items"].([]any)
	require.Len(t, items, 1)
	require.NotContains(t, items[0], "key", "the secret is shown only once")
	require.NotContains(t, string(list.Raw), key)

	// Both headers work.
	require.Equal(t, 200, b.call(t, "GET", "/api/auth/me", "", nil, "X-API-Key", key).Status)

	// Another user cannot see or delete it.
	other := b.register(t)
	requireError(t, b.call(t, "DELETE", "/api/auth/api-keys/"+created.Body["id"].(string), other.Token, nil), 404, "not_found", "-")
	require.Empty(t, b.call(t, "GET", "/api/auth/api-keys", other.Token, nil).Body["items"])

	require.Equal(t, 204, b.call(t, "DELETE", "/api/auth/api-keys/"+created.Body["id"].(string), u.Token, nil).Status)
	requireError(t, b.call(t, "GET", "/api/auth/me", key, nil), 401, "unauthorized", "-")
	requireError(t, b.call(t, "POST", "/api/auth/api-keys", u.Token, map[string]any{"name": ""}), 400, "validation_failed", "name")
}

// TestRevokedKeyFailsAcrossProcesses runs two processes on one store and
// one Redis: a key revoked through one is refused by the other as soon as
// the revocation reaches it over NATS, although the other had it cached in
// Redis and in process.
func TestRevokedKeyFailsAcrossProcesses(t *testing.T) {
	t.Parallel()
	a := setup(t)
	b := setup(t, func(c *Config) {
		c.DataDir = a.dir
		c.NATSURL = a.main.NATSURL
		c.RedisURL = a.main.RedisURL
		c.RedisPrefix = a.main.Config.RedisPrefix
	})
	u := a.register(t)
	created := a.call(t, "POST", "/api/auth/api-keys", u.Token, map[string]any{"name": "shared"})
	require.Equal(t, 201, created.Status)
	key := created.Body["key"].(string)
	require.Equal(t, 200, a.call(t, "GET", "/api/auth/me", key, nil).Status)
	require.Equal(t, 200, b.call(t, "GET", "/api/auth/me", key, nil).Status)

	require.Equal(t, 204, a.call(t, "DELETE", "/api/auth/api-keys/"+created.Body["id"].(string), u.Token, nil).Status)
	requireError(t, a.call(t, "GET", "/api/auth/me", key, nil), 401, "unauthorized", "-")
	// The other process hears of it over NATS, in well under the 2 s it
	// would otherwise trust its own copy.
	start := time.Now()
	require.Eventually(t, func() bool { return b.call(t, "GET", "/api/auth/me", key, nil).Status == 401 },
		time.Second, time.Millisecond)
	require.Less(t, time.Since(start), time.Second, "well within the 2 s a process keeps its own copy")
	requireError(t, b.call(t, "GET", "/api/auth/me", key, nil), 401, "unauthorized", "-")
}

// TestSessionsSurviveRedisDown stops Redis under a running process: logins,
// tokens and keys are served from the store, and rate limits fail open.
func TestSessionsSurviveRedisDown(t *testing.T) {
	t.Parallel()
	mr := miniredis.NewMiniRedis()
	require.NoError(t, mr.StartAddr("127.0.0.1:0"))
	b := setup(t, func(c *Config) { c.RedisURL = "redis://" + mr.Addr() })
	u := b.register(t)
	key := b.call(t, "POST", "/api/auth/api-keys", u.Token, map[string]any{"name": "k"}).Body["key"].(string)
	require.Equal(t, 200, b.call(t, "GET", "/api/auth/me", u.Token, nil).Status)
	require.Equal(t, 200, b.call(t, "GET", "/api/auth/me", key, nil).Status)

	mr.Close()
	require.Equal(t, 200, b.call(t, "GET", "/api/auth/me", u.Token, nil).Status)
	require.Equal(t, 200, b.call(t, "GET", "/api/auth/me", key, nil).Status)
	login := b.call(t, "POST", "/api/auth/login", "", map[string]any{"email": u.Email, "password": u.Password})
	require.Equal(t, 200, login.Status, string(login.Raw))
	ready := b.call(t, "GET", "/readyz", "", nil)
	require.Equal(t, 503, ready.Status)
}

func TestRateLimits(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *Config) { c.RatePerMinute = 5 })
	u := b.register(t) // one request of the IP's budget
	var last response
	for i := 0; i < 5; i++ {
		last = b.call(t, "GET", "/api/auth/me", u.Token, nil)
	}
	requireError(t, last, 429, "rate_limited", "-")
	require.NotEmpty(t, last.Header.Get("Retry-After"))
}

func TestCORS(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *Config) { c.CORSOrigins = []string{"https://app.example.com"} })
	res := b.call(t, "OPTIONS", "/api/workflows", "", nil, "Origin", "https://app.example.com", "Access-Control-Request-Method", "POST")
	require.Equal(t, 204, res.Status)
	require.Equal(t, "https://app.example.com", res.Header.Get("Access-Control-Allow-Origin"))
	res = b.call(t, "OPTIONS", "/api/workflows", "", nil, "Origin", "https://evil.example.com", "Access-Control-Request-Method", "POST")
	require.Empty(t, res.Header.Get("Access-Control-Allow-Origin"))
}
