package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/weftdev/weft/events"
	"github.com/weftdev/weft/events/natstest"
	"github.com/weftdev/weft/persistence"
	"github.com/weftdev/weft/persistence/sqlite"
	"github.com/weftdev/weft/workers"
	"github.com/weftdev/weft/workers/flow"
)

var binary struct {
	once sync.Once
	path string
	err  error
}

// weftBinary builds the weft command once for the tests that run it as a
// process of its own.
func weftBinary(t *testing.T) string {
	t.Helper()
	binary.once.Do(func() {
		dir, err := os.MkdirTemp("", "weft-bin-")
		if err != nil {
			binary.err = err
			return
		}
		binary.path = filepath.Join(dir, "weft")
		out, err := exec.Command("go", "build", "-o", binary.path, ".").CombinedOutput()
		if err != nil {
			binary.err = fmt.Errorf("go build: %v: %s", err, out)
		}
	})
	require.NoError(t, binary.err)
	return binary.path
}

const fanOut = `{"name":"fan","nodes":[{"id":"in","type":"INPUT"},
 {"id":"t1","type":"TRANSFORM","config":{"set":{"v":"input.i + 1"}}},{"id":"t2","type":"TRANSFORM","config":{"set":{"v":"input.i + 2"}}},
 {"id":"t3","type":"TRANSFORM","config":{"set":{"v":"input.i + 3"}}},{"id":"t4","type":"TRANSFORM","config":{"set":{"v":"input.i + 4"}}},
 {"id":"out","type":"OUTPUT","config":{"value":"{{ nodes.t1.output.v + nodes.t2.output.v + nodes.t3.output.v + nodes.t4.output.v }}"}}],
 "edges":[{"from":"in","to":"t1"},{"from":"in","to":"t2"},{"from":"in","to":"t3"},{"from":"in","to":"t4"},
 {"from":"t1","to":"out"},{"from":"t2","to":"out"},{"from":"t3","to":"out"},{"from":"t4","to":"out"}]}`

// TestWorkerKilledLosesNothing runs a worker process with many executions
// in flight, kills it with SIGKILL, starts another, and checks that every
// execution completes, each node recorded once with its right result, and
// each execution announced complete exactly once.
func TestWorkerKilledLosesNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs worker processes")
	}
	t.Parallel()
	bin := weftBinary(t)
	natsURL := startNATS(t)
	dir := t.TempDir()
	ctx := context.Background()
	store, err := sqlite.Open(ctx, filepath.Join(dir, "weft.db"))
	require.NoError(t, err)
	t.Cleanup(func() { _ = store.Close() })

	u := &persistence.User{ID: "01killuser", Email: "kill@example.com", Name: "K", PasswordHash: "x", CreatedAt: time.Now()}
	require.NoError(t, store.CreateUser(ctx, u))
	def, problems := flow.Parse([]byte(fanOut))
	require.Empty(t, problems)
	raw, _ := json.Marshal(def)
	wf := &persistence.Workflow{ID: "01killwf", UserID: u.ID, Name: "fan", Definition: raw, CreatedAt: time.Now(), UpdatedAt: time.Now()}
	require.NoError(t, store.CreateWorkflow(ctx, wf))

	worker := func() *exec.Cmd {
		cmd := exec.Command(bin, "worker", "--nats", natsURL, "--data", dir, "--hop-per-node",
			"--node-timeout", "1s", "--concurrency", "16", "--log-level", "error")
		cmd.Env = append(os.Environ(), "WEFT_REDIS_URL=", "WEFT_MONGO_URI=", "WEFT_JWT_SECRET=a secret of thirty-two characters or more")
		cmd.Stderr = os.Stderr
		require.NoError(t, cmd.Start())
		t.Cleanup(func() {
			if cmd.ProcessState == nil {
				_ = cmd.Process.Signal(syscall.SIGTERM)
				_ = cmd.Wait()
			}
		})
		return cmd
	}

	// Executions recorded as the ingress records them, then submitted.
	_, js := natstest.Connect(t, natsURL)
	require.NoError(t, workers.EnsureStreams(ctx, js, events.Settings{}))
	const n = 300
	ids := make([]string, n)
	for i := range n {
		ids[i] = fmt.Sprintf("kill-%03d", i)
		ex := &persistence.Execution{ID: ids[i], UserID: u.ID, WorkflowID: wf.ID, WorkflowVersion: 1, Status: persistence.StatusQueued,
			Inputs: json.RawMessage(fmt.Sprintf(`{"i":%d}`, i)), CreatedAt: time.Now()}
		_, _, err := store.CreateExecution(ctx, ex)
		require.NoError(t, err)
	}
	first := worker()
	for _, id := range ids {
		m := nats.NewMsg(events.SubjectSubmit)
		m.Data, _ = json.Marshal(events.SubmitRequest{WorkflowID: wf.ID, ExecutionID: id})
		m.Header.Set(events.HeaderMsgID, id)
		_, err := js.PublishMsgAsync(m)
		require.NoError(t, err)
	}
	<-js.PublishAsyncComplete()

	// Kill it while work is in flight: some executions done, most not.
	require.Eventually(t, func() bool {
		list, err := store.UnfinishedExecutions(ctx, time.Now().Add(time.Hour), 1000)
		return err == nil && len(list) < n-20
	}, 30*time.Second, 5*time.Millisecond)
	require.NoError(t, first.Process.Kill())
	_ = first.Wait()
	left, err := store.UnfinishedExecutions(ctx, time.Now().Add(time.Hour), 1000)
	require.NoError(t, err)
	t.Logf("killed the worker with %d of %d executions unfinished", len(left), n)
	require.NotEmpty(t, left, "the kill must come while work is in flight")

	worker()
	require.Eventually(t, func() bool {
		list, err := store.UnfinishedExecutions(ctx, time.Now().Add(time.Hour), 1000)
		return err == nil && len(list) == 0
	}, 60*time.Second, 50*time.Millisecond)

	for i, id := range ids {
		ex, err := store.LoadExecution(ctx, id)
		require.NoError(t, err)
		require.Equal(t, persistence.StatusCompleted, ex.Status, id)
		require.JSONEq(t, fmt.Sprint(4*i+10), string(ex.Output), id)
		require.Len(t, ex.Nodes, 6)
		for nid, st := range ex.Nodes {
			require.Equal(t, persistence.StatusCompleted, st.Status, id+"."+nid)
		}
	}
	// Each execution was announced complete exactly once.
	stream, err := js.Stream(ctx, events.StreamEvents)
	require.NoError(t, err)
	var info *jetstream.StreamInfo
	require.Eventually(t, func() bool { // each end is published just after the store has it
		info, err = stream.Info(ctx, jetstream.WithSubjectFilter("weft.events.*.completed"))
		return err == nil && len(info.State.Subjects) == n
	}, 5*time.Second, 20*time.Millisecond)
	require.Len(t, info.State.Subjects, n)
	for subject, count := range info.State.Subjects {
		require.EqualValues(t, 1, count, subject)
	}
}
