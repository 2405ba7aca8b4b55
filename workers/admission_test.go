package workers_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/weftdev/weft/events"
	"github.com/weftdev/weft/persistence"
	"github.com/weftdev/weft/workers"
)

var testSubmitKey = events.SubmissionKey([]byte("a shared secret of the deployment, at least 32 bytes"))

// record stores a queued execution as the ingress does, and returns the
// signed submission it would publish.
func (b *bundle) record(t *testing.T, id, text string, key []byte) *nats.Msg {
	t.Helper()
	ex := b.newExecution(t, id, text)
	stored, created, err := b.store.CreateExecution(context.Background(), ex)
	require.NoError(t, err)
	require.True(t, created)
	return admission(stored, key)
}

// newExecution is a queued execution of the bundle's workflow, not stored.
func (b *bundle) newExecution(t *testing.T, id, text string) *persistence.Execution {
	t.Helper()
	w, err := b.store.GetWorkflow(context.Background(), b.userID, b.wf.ID)
	require.NoError(t, err)
	ex, err := b.engine.NewExecution(context.Background(), w, id, map[string]any{"text": text}, time.Now())
	require.NoError(t, err)
	return ex
}

// admission is the submission the ingress publishes for ex, signed with key.
func admission(ex *persistence.Execution, key []byte) *nats.Msg {
	m := nats.NewMsg(events.SubjectSubmit)
	m.Data, _ = json.Marshal(events.Admission{ExecutionID: ex.ID, WorkflowID: ex.WorkflowID, WorkflowVersion: ex.WorkflowVersion,
		UserID: ex.UserID, CreatedAt: ex.CreatedAt, Inputs: ex.Inputs})
	m.Header.Set(events.HeaderMsgID, ex.ID)
	m.Header.Set(events.HeaderSignature, events.SignAdmission(key, m.Data))
	return m
}

func (b *bundle) publish(t *testing.T, m *nats.Msg) {
	t.Helper()
	_, err := b.js.PublishMsg(context.Background(), m)
	require.NoError(t, err)
}

// settled waits until the starter has acked everything it was given.
func (b *bundle) settled(t *testing.T) {
	t.Helper()
	require.Eventually(t, func() bool {
		c, err := b.js.Consumer(context.Background(), events.StreamSubmit, events.ConsumerStarter)
		if err != nil {
			return false
		}
		info, err := c.Info(context.Background())
		return err == nil && info.NumPending == 0 && info.NumAckPending == 0
	}, 10*time.Second, 10*time.Millisecond)
}

// TestSignedSubmissionRunsWithoutReadingTheStore: the first delivery of a
// submission the ingress signed runs from the message alone.
func TestSignedSubmissionRunsWithoutReadingTheStore(t *testing.T) {
	t.Parallel()
	b := setup(t, workers.Config{SubmitKey: testSubmitKey})
	b.start(t)
	id := uid("signed")
	b.publish(t, b.record(t, id, "go", testSubmitKey))
	ex := b.waitEnd(t, id)
	require.Equal(t, persistence.StatusCompleted, ex.Status)
	require.JSONEq(t, `{"a":"goa","b":"gob","d":null}`, string(ex.Output))
	require.NotNil(t, ex.StartedAt)
	b.settled(t)
	require.Zero(t, b.loads.Load(), "the starter read no execution")
}

// TestSignedSubmissionBeforeItsRecord: the ingress writes the record while
// the submission travels; a starter that gets there first records the
// execution itself, once.
func TestSignedSubmissionBeforeItsRecord(t *testing.T) {
	t.Parallel()
	b := setup(t, workers.Config{SubmitKey: testSubmitKey})
	b.start(t)
	// The ingress's write has not landed: only the submission is there.
	ex := b.newExecution(t, uid("early"), "go")
	other := ex.ID
	b.publish(t, admission(ex, testSubmitKey))
	done := b.waitEnd(t, other)
	require.Equal(t, persistence.StatusCompleted, done.Status)
	require.JSONEq(t, `{"a":"goa","b":"gob","d":null}`, string(done.Output))
	require.Equal(t, b.userID, done.UserID)

	// The ingress's write, late: changes nothing.
	_, created, err := b.store.CreateExecution(context.Background(), ex)
	require.NoError(t, err)
	require.False(t, created)
	again, err := b.store.LoadExecution(context.Background(), other)
	require.NoError(t, err)
	require.Equal(t, persistence.StatusCompleted, again.Status)
}

// TestForgedSignatureIsRefused: a submission signed with another key is
// refused, kept for inspection, and runs nothing.
func TestForgedSignatureIsRefused(t *testing.T) {
	t.Parallel()
	b := setup(t, workers.Config{SubmitKey: testSubmitKey})
	b.start(t)
	id := uid("forged")
	b.publish(t, b.record(t, id, "go", events.SubmissionKey([]byte("somebody else's secret"))))
	rejected, err := b.js.Stream(context.Background(), events.StreamRejected)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		info, err := rejected.Info(context.Background())
		return err == nil && info.State.Msgs == 1
	}, 5*time.Second, 10*time.Millisecond)
	msg, err := rejected.GetLastMsgForSubject(context.Background(), ">")
	require.NoError(t, err)
	require.Contains(t, msg.Header.Get(events.HeaderReason), "signature")
	b.settled(t)
	ex, err := b.store.LoadExecution(context.Background(), id)
	require.NoError(t, err)
	require.Equal(t, persistence.StatusQueued, ex.Status, "nothing ran")
	require.Zero(t, runCount(id, "a"))
}

// TestSignedSubmissionOfACancelledExecution: cancelled between submit and
// start, the execution stays as cancelled; the starter, which did not
// read it, writes and announces nothing.
func TestSignedSubmissionOfACancelledExecution(t *testing.T) {
	t.Parallel()
	// Fused, the first step runs every node and would record them; with a
	// hop per node it would announce a start and schedule a task.
	for _, hop := range []bool{false, true} {
		b := setup(t, workers.Config{SubmitKey: testSubmitKey, HopPerNode: hop})
		b.start(t)
		id := uid("cancelled")
		m := b.record(t, id, "go", testSubmitKey)
		res, err := b.store.ApplyExecution(context.Background(), persistence.ExecutionUpdate{ID: id,
			Finish: &persistence.Finish{Status: persistence.StatusCancelled, At: time.Now()}})
		require.NoError(t, err)
		require.True(t, res.Finished)
		b.publish(t, m)
		b.settled(t)

		ex, err := b.store.LoadExecution(context.Background(), id)
		require.NoError(t, err)
		require.Equal(t, persistence.StatusCancelled, ex.Status)
		require.Nil(t, ex.StartedAt)
		require.Empty(t, ex.Nodes, "hop per node: %v", hop)
		stream, err := b.js.Stream(context.Background(), events.StreamEvents)
		require.NoError(t, err)
		_, err = stream.GetLastMsgForSubject(context.Background(), events.EventSubject(id, ">"))
		require.ErrorIs(t, err, jetstream.ErrMsgNotFound, "no event announced a start or an end")
		if hop {
			// Fused, the pure nodes ran (nothing of theirs was kept).
			require.Zero(t, runCount(id, "a"), "no task ran")
		}
	}
}

// TestOneReconcilerAtATime: of two engines, one holds the reconciler's
// lease; when it stops, the other takes over.
func TestOneReconcilerAtATime(t *testing.T) {
	t.Parallel()
	cfg := workers.Config{ReconcileEvery: 50 * time.Millisecond}
	b := setup(t, cfg)
	b.start(t)
	other, err := workers.New(cfg, b.nc, b.js, b.store, nil)
	require.NoError(t, err)
	require.NoError(t, other.Start(context.Background(), nil))
	t.Cleanup(other.Stop)

	require.Eventually(t, func() bool { return b.engine.Reconciling() != other.Reconciling() }, 5*time.Second, 10*time.Millisecond)
	for range 5 { // and it stays so, round after round
		time.Sleep(60 * time.Millisecond)
		require.NotEqual(t, b.engine.Reconciling(), other.Reconciling(), "exactly one reconciles")
	}
	leader, follower := b.engine, other
	if other.Reconciling() {
		leader, follower = other, b.engine
	}
	leader.Stop()
	require.Eventually(t, follower.Reconciling, 5*time.Second, 10*time.Millisecond, "the other takes the lease")
}
