package main

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"
)

// TestMetricsAfterMixedTraffic: the labels /metrics keeps are the
// requests' own, not views of buffers the next request reuses.
func TestMetricsAfterMixedTraffic(t *testing.T) {
	t.Parallel()
	b := setup(t)
	u := b.register(t)
	for _, r := range [][2]string{
		{"OPTIONS", "/x"}, {"GET", "/healthz"}, {"DELETE", "/api/workflows/nope"}, {"PUT", "/nothing"},
		{"POST", "/api/auth/login"}, {"GET", "/api/auth/me"}, {"PATCH", "/api/auth/me"}, {"HEAD", "/healthz"},
	} {
		b.call(t, r[0], r[1], u.Token, nil)
	}
	for range 3 {
		res := b.call(t, "GET", "/metrics", "", nil)
		require.Equal(t, 200, res.Status, string(res.Raw))
		parser := expfmt.NewTextParser(model.UTF8Validation)
		families, err := parser.TextToMetricFamilies(bytes.NewReader(res.Raw))
		require.NoError(t, err)
		methods := map[string]bool{}
		for _, m := range families["weft_http_requests_total"].GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "method" {
					methods[l.GetValue()] = true
				}
			}
		}
		for m := range methods {
			require.Contains(t, []string{"GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"}, m)
		}
		require.True(t, methods["OPTIONS"] && methods["PATCH"] && methods["GET"], "%v", methods)
	}
}

// TestSecurityHeaders: no sniffing and no framing anywhere; nothing that
// carries a token or a key may be cached.
func TestSecurityHeaders(t *testing.T) {
	t.Parallel()
	b := setup(t)
	email := "h" + randomHex(t) + "@example.com"
	reg := b.call(t, "POST", "/api/auth/register", "", map[string]any{"email": email, "password": "correct horse battery", "name": "H"})
	require.Equal(t, 201, reg.Status)
	token := reg.Body["token"].(string)
	login := b.call(t, "POST", "/api/auth/login", "", map[string]any{"email": email, "password": "correct horse battery"})
	refresh := b.call(t, "POST", "/api/auth/refresh", "", map[string]any{"refreshToken": login.Body["refreshToken"]})
	key := b.call(t, "POST", "/api/auth/api-keys", token, map[string]any{"name": "k"})
	require.Equal(t, 201, key.Status)
	for name, res := range map[string]response{
		"register": reg, "login": login, "refresh": refresh, "api key": key,
		"me": b.call(t, "GET", "/api/auth/me", token, nil), "error": b.call(t, "GET", "/api/auth/me", "", nil),
	} {
		require.Equal(t, "no-store", res.Header.Get("Cache-Control"), name)
		require.Equal(t, "nosniff", res.Header.Get("X-Content-Type-Options"), name)
		require.Equal(t, "DENY", res.Header.Get("X-Frame-Options"), name)
		require.Contains(t, res.Header.Get("Content-Security-Policy"), "frame-ancestors 'none'", name)
	}
	for _, path := range []string{"/healthz", "/metrics", "/openapi.yaml", "/nowhere"} {
		res := b.call(t, "GET", path, "", nil)
		require.Equal(t, "nosniff", res.Header.Get("X-Content-Type-Options"), path)
		require.Equal(t, "DENY", res.Header.Get("X-Frame-Options"), path)
	}
}

// TestRevokeAndLogoutGetThroughAnExhaustedLimit: an attacker hammering a
// leaked key from elsewhere spends its owner's per-user budget; the owner
// can still revoke it and log out.
func TestRevokeAndLogoutGetThroughAnExhaustedLimit(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *Config) { c.RatePerMinute = 6 })
	u := b.register(t)
	created := b.call(t, "POST", "/api/auth/api-keys", u.Token, map[string]any{"name": "leaked"})
	require.Equal(t, 201, created.Status, string(created.Raw))
	leaked := created.Body["key"].(string)

	// The attacker calls from another address.
	attacker := &http.Client{Transport: &http.Transport{DialContext: (&net.Dialer{
		LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}, Timeout: 5 * time.Second,
	}).DialContext}}
	limited := false
	for i := 0; i < 20 && !limited; i++ {
		req, err := http.NewRequestWithContext(context.Background(), "GET", b.url+"/api/auth/me", nil)
		require.NoError(t, err)
		req.Header.Set("X-API-Key", leaked)
		res, err := attacker.Do(req)
		require.NoError(t, err)
		res.Body.Close()
		limited = res.StatusCode == 429
	}
	require.True(t, limited, "the attacker spent the budget")
	requireError(t, b.call(t, "GET", "/api/auth/me", u.Token, nil), 429, "rate_limited", "-")

	require.Equal(t, 204, b.call(t, "DELETE", "/api/auth/api-keys/"+created.Body["id"].(string), u.Token, nil).Status)
	requireError(t, b.call(t, "GET", "/api/auth/me", "", nil, "X-API-Key", leaked), 401, "unauthorized", "-")
	out := b.call(t, "POST", "/api/auth/logout", u.Token, map[string]any{"refreshToken": u.Refresh})
	require.Less(t, out.Status, 300, string(out.Raw))
	require.False(t, strings.Contains(string(out.Raw), "rate_limited"))
}

// TestInvalidUTF8IsRefused: bytes that are not UTF-8 are a 400 naming
// their path, never read as U+FFFD (two passwords would log in as one).
func TestInvalidUTF8IsRefused(t *testing.T) {
	t.Parallel()
	b := setup(t)
	email := "utf" + randomHex(t) + "@example.com"
	res := b.call(t, "POST", "/api/auth/register", "", `{"email":"`+email+`","password":"correct horse `+"\xff"+`","name":"U"}`)
	requireError(t, res, 400, "validation_failed", "password")
	require.Equal(t, 201, b.call(t, "POST", "/api/auth/register", "", `{"email":"`+email+`","password":"correct horse `+"\ufffd"+`","name":"U"}`).Status)
	requireError(t, b.call(t, "POST", "/api/auth/login", "", `{"email":"`+email+`","password":"correct horse `+"\xfe"+`"}`), 400, "validation_failed", "password")
	u := b.register(t)
	requireError(t, b.call(t, "POST", "/api/workflows", u.Token, `{"name":"w`+"\xff"+`","nodes":[]}`), 400, "validation_failed", "name")
	wf := b.workflow(t, u, seedWorkflow())
	requireError(t, b.call(t, "POST", "/api/executions", u.Token, `{"workflowId":"`+wf+`","inputs":{"text":["ok","`+"\xc3"+`"]}}`), 400, "validation_failed", "inputs.text[1]")
}
