package workers

import (
	"context"
	"encoding/json"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/weftdev/weft/events"
	"github.com/weftdev/weft/persistence"
	"github.com/weftdev/weft/workers/nodes"
)

// handleTask runs the node a task names, unless its result is recorded
// already (a redelivery), and advances the execution.
func (e *Engine) handleTask(ctx context.Context, m jetstream.Msg) {
	md, err := m.Metadata()
	if err != nil {
		_ = m.Term()
		return
	}
	var t events.Task
	if err := decodeStrict(m.Data(), &t); err != nil || t.ExecutionID == "" || t.NodeID == "" {
		e.reject(ctx, m, "", events.Errorf(events.CodeInvalid, "not a task"))
		return
	}
	ex, err := e.store.LoadExecution(ctx, t.ExecutionID)
	if err != nil {
		e.failMessage(ctx, m, md, t.ExecutionID, err)
		return
	}
	g, err := e.graph(ctx, ex.UserID, ex.WorkflowID, ex.WorkflowVersion)
	if err != nil {
		e.failMessage(ctx, m, md, t.ExecutionID, err)
		return
	}
	if persistence.Terminal(ex.Status) {
		// Finished, cancelled or failed meanwhile: the node is not run. A
		// redelivery may be of the step that finished it, whose worker died
		// before announcing the end.
		if md.NumDelivered > 1 {
			if err := e.republishEnd(ctx, ex, g); err != nil {
				e.failMessage(ctx, m, md, t.ExecutionID, err)
				return
			}
		}
		_ = m.Ack()
		return
	}
	n := g.Nodes[t.NodeID]
	if n == nil {
		e.reject(ctx, m, t.ExecutionID, events.Errorf(events.CodeInvalid, "the workflow has no node %q", t.NodeID))
		return
	}
	s := newStep(e, ex, g)
	s.begin()
	if s.status(n.ID) == persistence.StatusRunning && md.NumDelivered == 1 {
		// A second copy of a task whose first copy a worker holds: that
		// one is redelivered if its worker dies, so this one is dropped
		// rather than run the node twice.
		_ = m.Ack()
		return
	}
	if !persistence.Terminal(s.status(n.ID)) {
		attempt := int(md.NumDelivered)
		start := e.cfg.Now().UTC()
		spec, _ := e.spec(n.Type)
		if !spec.Pure {
			// Show the node running; pure nodes finish before anyone could look.
			s.set(n.ID, &persistence.NodeState{Type: n.Type, Status: persistence.StatusRunning, Attempts: attempt, StartedAt: &start})
			fresh, err := s.commit(ctx)
			if err != nil {
				e.failMessage(ctx, m, md, t.ExecutionID, err)
				return
			}
			if fresh != nil && persistence.Terminal(fresh.Status) {
				// Cancelled or failed meanwhile: the node does not start.
				_ = m.Ack()
				return
			}
			s = newStep(e, ex, g)
		}
		out, err := e.runTracked(ctx, s, n.ID, attempt, m)
		if err != nil {
			if ne := nodes.Classify(err); ne.Retryable && attempt < max(n.Retry.MaxAttempts, 1) {
				s.upd.Logs = append(s.upd.Logs, persistence.NodeLog{NodeID: n.ID, At: e.cfg.Now().UTC(), Level: "warn",
					Message: "attempt " + strconvU(uint64(attempt)) + " failed, will retry: " + ne.Error()})
				if _, err := s.commit(ctx); err != nil {
					e.failMessage(ctx, m, md, t.ExecutionID, err)
					return
				}
				_ = m.NakWithDelay(retryDelay(n.Retry.Backoff, attempt, ne.RetryAfter))
				return
			}
		}
		s.record(n, attempt, start, out, err)
	} else if md.NumDelivered > 1 {
		// Recorded by a worker that may have died before announcing it:
		// announce it again (the projector counts a node once).
		s.changed = append(s.changed, nodeEvent(n.ID, s.ex.Nodes[n.ID]))
	}
	if err := e.drive(ctx, s); err != nil {
		e.failMessage(ctx, m, md, t.ExecutionID, err)
		return
	}
	_ = m.Ack()
}

// runTracked runs one node under its timeout, stoppable by a cancel of its
// execution, telling JetStream it is alive while it runs.
func (e *Engine) runTracked(ctx context.Context, s *step, nodeID string, attempt int, m jetstream.Msg) (any, error) {
	n := s.g.Nodes[nodeID]
	timeout := n.Timeout
	if timeout <= 0 {
		// A node whose config sets no timeoutMs gets the process's default.
		timeout = e.cfg.Settings.NodeTimeoutOrDefault()
	}
	rctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	defer e.track(s.ex.ID, cancel)()
	keepAlive := func() { _ = m.InProgress() }
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		// Well inside AckWait (twice the node timeout setting).
		t := time.NewTicker(e.cfg.Settings.NodeTimeoutOrDefault() / 2)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				keepAlive()
			}
		}
	}()
	return s.runNode(rctx, n, attempt, keepAlive)
}

// reconcileLoop periodically re-submits executions stuck in queued or
// running: an ingress that died between recording and publishing, or work
// lost with a stream. The message id makes a re-submission of one that is
// in flight a no-op, and the starter only advances what is stored.
//
// One process of a deployment reconciles at a time: the holder of a lease
// in the WEFT_LOCKS bucket, which it renews every round. Another takes
// over within three rounds of its death. Two reconciling at once (a
// holder paused past its lease) would only re-submit the same executions,
// which their message ids make harmless.
func (e *Engine) reconcileLoop(ctx context.Context) {
	t := time.NewTicker(e.cfg.ReconcileEvery)
	defer t.Stop()
	var kv jetstream.KeyValue
	var rev uint64 // of our lease, 0 when we do not hold it
	for {
		select {
		case <-ctx.Done():
			if kv != nil && rev != 0 {
				// Hand the lease on at once rather than after its TTL.
				dctx, cancel := context.WithTimeout(context.Background(), time.Second)
				_ = kv.Delete(dctx, leaseReconciler, jetstream.LastRevision(rev))
				cancel()
			}
			return
		case <-t.C:
		}
		if kv == nil {
			var err error
			kv, err = e.js.CreateOrUpdateKeyValue(ctx, events.LocksBucket(e.cfg.Settings, 3*e.cfg.ReconcileEvery))
			if err != nil {
				kv = nil
				e.log.Warn("reconcile: leases bucket", "err", err)
				continue
			}
		}
		rev = e.lease(ctx, kv, rev)
		e.leading.Store(rev != 0)
		if rev == 0 {
			continue
		}
		if err := e.Reconcile(ctx); err != nil && ctx.Err() == nil {
			e.log.Warn("reconcile", "err", err)
		}
	}
}

// leaseReconciler is the reconciler's key in the leases bucket.
const leaseReconciler = "reconciler"

// lease takes or renews the reconciler's lease and returns its revision,
// or 0 when another process holds it.
func (e *Engine) lease(ctx context.Context, kv jetstream.KeyValue, rev uint64) uint64 {
	var (
		next uint64
		err  error
	)
	if rev != 0 {
		next, err = kv.Update(ctx, leaseReconciler, []byte(e.id), rev)
	} else {
		next, err = kv.Create(ctx, leaseReconciler, []byte(e.id))
	}
	if err != nil {
		return 0
	}
	return next
}

// Reconciling reports whether this engine held the reconciler's lease at
// its last round.
func (e *Engine) Reconciling() bool { return e.leading.Load() }

// Reconcile re-submits executions unfinished for longer than
// ReconcileAfter.
func (e *Engine) Reconcile(ctx context.Context) error {
	stuck, err := e.store.UnfinishedExecutions(ctx, e.cfg.Now().Add(-e.cfg.ReconcileAfter), 500)
	if err != nil {
		return err
	}
	for _, ex := range stuck {
		data, _ := json.Marshal(events.SubmitRequest{WorkflowID: ex.WorkflowID, ExecutionID: ex.ID})
		msg := nats.NewMsg(events.SubjectSubmit)
		msg.Data = data
		msg.Header.Set(events.HeaderMsgID, ex.ID)
		if _, err := e.js.PublishMsg(ctx, msg); err != nil {
			return err
		}
	}
	if len(stuck) > 0 {
		e.log.Info("re-submitted unfinished executions", "count", len(stuck))
	}
	return nil
}
