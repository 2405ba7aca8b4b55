package main

import (
	"fmt"
	"net"
	"os/exec"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// redisServer runs a real redis-server of the test's own on port, ended by
// its PID.
type redisServer struct {
	bin, dir string
	port     int
	cmd      *exec.Cmd
}

func (r *redisServer) start(t *testing.T) {
	t.Helper()
	r.cmd = exec.Command(r.bin, "--bind", "127.0.0.1", "--port", fmt.Sprint(r.port), "--save", "", "--appendonly", "no", "--dir", r.dir)
	require.NoError(t, r.cmd.Start())
	require.Eventually(t, func() bool {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", r.port))
		if err == nil {
			_ = c.Close()
		}
		return err == nil
	}, 5*time.Second, 20*time.Millisecond)
}

func (r *redisServer) stop() {
	if r.cmd != nil && r.cmd.Process != nil {
		_ = r.cmd.Process.Kill()
		_ = r.cmd.Wait()
		r.cmd = nil
	}
}

// TestRedisOutage stops a real Redis under a running Weft: the API and the
// engine go on from the store (sign-in, API keys, submissions, results),
// without paying for the dead server on every request; when Redis returns,
// the dashboard counters are rebuilt from the event stream, the runs made
// meanwhile included.
func TestRedisOutage(t *testing.T) {
	t.Parallel()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Skip("redis-server is not installed (CI installs it)")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := l.Addr().(*net.TCPAddr).Port
	require.NoError(t, l.Close())
	r := &redisServer{bin: bin, dir: t.TempDir(), port: port}
	r.start(t)
	t.Cleanup(r.stop)

	b := setup(t, func(c *Config) { c.RedisURL = fmt.Sprintf("redis://127.0.0.1:%d/0", port) })
	u := b.register(t)
	key := b.call(t, "POST", "/api/auth/api-keys", u.Token, map[string]any{"name": "outage"}).Body["key"].(string)
	wf := b.workflow(t, u, seedWorkflow())
	run := func(token string) {
		t.Helper()
		res := b.call(t, "POST", "/api/executions?wait=10s", token, map[string]any{"workflowId": wf, "inputs": map[string]any{"text": "v"}})
		require.Equal(t, 200, res.Status, string(res.Raw))
		require.Equal(t, "completed", res.Body["status"])
		got := b.call(t, "GET", "/api/executions/"+res.Body["id"].(string), token, nil)
		require.Equal(t, 200, got.Status, string(got.Raw))
	}
	run(u.Token)
	require.Eventually(t, func() bool {
		o := b.call(t, "GET", "/api/dashboard/overview", u.Token, nil)
		return o.Status == 200 && o.Body["executions"].(map[string]any)["completed"] == 1.0
	}, 10*time.Second, 50*time.Millisecond)

	r.stop()
	start := time.Now()
	run(u.Token)
	run(key)
	login := b.call(t, "POST", "/api/auth/login", "", map[string]any{"email": u.Email, "password": u.Password})
	require.Equal(t, 200, login.Status, string(login.Raw))
	run(login.Body["token"].(string))
	require.Less(t, time.Since(start), 2*time.Second, "an outage does not stall requests")
	ready := b.call(t, "GET", "/readyz", "", nil)
	require.Equal(t, 503, ready.Status, "readiness tells that Redis is gone")

	r.start(t) // empty: every counter and cache entry is gone
	require.Eventually(t, func() bool {
		return b.call(t, "GET", "/readyz", "", nil).Status == 200
	}, 10*time.Second, 100*time.Millisecond)
	run(key)
	require.Eventually(t, func() bool {
		o := b.call(t, "GET", "/api/dashboard/overview", u.Token, nil)
		return o.Status == 200 && o.Body["executions"].(map[string]any)["completed"] == 5.0
	}, 20*time.Second, 100*time.Millisecond, "counters rebuilt from the stream, outage runs included")
}
