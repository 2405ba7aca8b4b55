package workers

import (
	"context"
	"errors"
	"fmt"
	"math"
	"runtime/debug"
	"strings"
	"time"
	"unicode/utf8"

	json "github.com/goccy/go-json"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/weftdev/weft/events"
	"github.com/weftdev/weft/persistence"
	"github.com/weftdev/weft/workers/flow"
	"github.com/weftdev/weft/workers/nodes"
)

// step is one execution held in memory while a worker advances it.
type step struct {
	e   *Engine
	ex  *persistence.Execution
	g   *flow.Graph
	now time.Time

	upd      persistence.ExecutionUpdate
	changed  []events.NodeEvent // node transitions made here
	tasks    []string           // nodes to send as tasks
	sent     map[string]bool    // tasks an earlier commit of this worker sent
	failure  *persistence.ExecutionError
	inputs   map[string]any
	outputs  map[string]any // decoded outputs, by node id
	env      map[string]any // the expression environment, made again for each node
	finished bool
}

func newStep(e *Engine, ex *persistence.Execution, g *flow.Graph) *step {
	if ex.Nodes == nil {
		ex.Nodes = map[string]*persistence.NodeState{}
	}
	now := e.cfg.Now().UTC()
	return &step{e: e, ex: ex, g: g, now: now, outputs: map[string]any{},
		upd:     persistence.ExecutionUpdate{ID: ex.ID, Nodes: make(map[string]*persistence.NodeState, len(g.Nodes))},
		changed: make([]events.NodeEvent, 0, len(g.Nodes))}
}

func (s *step) status(id string) string {
	if n := s.ex.Nodes[id]; n != nil {
		return n.Status
	}
	return persistence.NodePending
}

// set records a node's new state, in memory and in the pending update.
func (s *step) set(id string, n *persistence.NodeState) {
	s.ex.Nodes[id] = n
	s.upd.Nodes[id] = n
	s.changed = append(s.changed, nodeEvent(id, n))
}

// nodeEvent is the transition a node state announces.
func nodeEvent(id string, n *persistence.NodeState) events.NodeEvent {
	ev := events.NodeEvent{ID: id, Type: n.Type, Status: n.Status, Attempts: n.Attempts}
	if n.StartedAt != nil && n.FinishedAt != nil {
		ev.DurationMs = float64(n.FinishedAt.Sub(*n.StartedAt).Microseconds()) / 1000
	}
	return ev
}

// begin marks a queued execution running.
func (s *step) begin() {
	if s.ex.Status == persistence.StatusQueued {
		t := s.now
		s.upd.Start = &t
		s.ex.Status = persistence.StatusRunning
		s.ex.StartedAt = &t
	}
}

// scope is what the node's expressions may read: only the nodes it refers
// to are decoded.
func (s *step) scope(n *flow.CompiledNode) (flow.Scope, error) {
	if s.inputs == nil {
		s.inputs = map[string]any{}
		if len(s.ex.Inputs) > 0 {
			if err := json.Unmarshal(s.ex.Inputs, &s.inputs); err != nil {
				return flow.Scope{}, fmt.Errorf("inputs: %w", err)
			}
		}
	}
	sc := flow.Scope{Input: s.inputs, Execution: flow.ExecutionInfo{ID: s.ex.ID, WorkflowID: s.ex.WorkflowID}}
	if len(n.Refs) > 0 {
		sc.Nodes = make(map[string]flow.NodeResult, len(n.Refs))
		for _, ref := range n.Refs {
			out, err := s.output(ref)
			if err != nil {
				return flow.Scope{}, err
			}
			sc.Nodes[ref] = flow.NodeResult{Output: out, Status: s.status(ref)}
		}
	}
	if s.env == nil {
		s.env = make(map[string]any, 3)
	}
	return sc.PreparedIn(s.env), nil
}

func (s *step) output(id string) (any, error) {
	if v, ok := s.outputs[id]; ok {
		return v, nil
	}
	var v any
	if n := s.ex.Nodes[id]; n != nil && len(n.Output) > 0 {
		if err := json.Unmarshal(n.Output, &v); err != nil {
			return nil, fmt.Errorf("output of %s: %w", id, err)
		}
	}
	s.outputs[id] = v
	return v, nil
}

// readiness tells whether every predecessor of id is resolved, and whether
// at least one edge into it was taken.
func (s *step) readiness(n *flow.CompiledNode) (ready, taken bool) {
	if len(n.Predecessors) == 0 {
		return true, true
	}
	for _, edge := range n.Predecessors {
		st := s.status(edge.From)
		if !persistence.Terminal(st) {
			return false, false
		}
		if s.edgeTaken(edge, st) {
			taken = true
		}
	}
	return true, taken
}

func (s *step) edgeTaken(edge flow.Edge, predStatus string) bool {
	pred := s.g.Nodes[edge.From]
	switch {
	case predStatus == persistence.StatusCompleted:
	case predStatus == persistence.StatusFailed && pred.OnError == "continue":
	default:
		return false
	}
	if pred.Type != flow.TypeCondition {
		return true
	}
	if predStatus != persistence.StatusCompleted {
		// A CONDITION that failed (onError "continue") decided nothing:
		// neither branch is taken.
		return false
	}
	out, err := s.output(edge.From)
	if err != nil {
		return false
	}
	m, _ := out.(map[string]any)
	result, _ := m["result"].(bool)
	return (edge.Branch == "true") == result
}

// advance resolves every node it can: skips, inline runs, tasks. It repeats
// until nothing more moves, then finishes the execution when all is done.
func (s *step) advance(ctx context.Context) {
	for moved := true; moved && s.failure == nil; {
		moved = false
		for _, id := range s.g.Order {
			st := s.status(id)
			if st != persistence.NodePending || s.sent[id] || slicesContains(s.tasks, id) {
				continue
			}
			n := s.g.Nodes[id]
			ready, taken := s.readiness(n)
			switch {
			case !ready:
				continue
			case !taken:
				s.set(id, &persistence.NodeState{Type: n.Type, Status: persistence.NodeSkipped})
				moved = true
			case s.inline(n):
				s.runInline(ctx, n)
				moved = true
			case !runnable(n.Type):
				// No build of Weft this old has a runner for it: fail now
				// rather than leave a task no pool will take.
				now := s.e.cfg.Now().UTC()
				s.record(n, 0, now, nil, nodes.Permanent("unsupported_node", "this version of Weft cannot run %s nodes yet", n.Type))
				moved = true
			default:
				s.tasks = append(s.tasks, id)
			}
			if s.failure != nil {
				break
			}
		}
	}
	s.finishIfDone()
}

func runnable(nodeType string) bool {
	_, ok := nodes.Lookup(nodeType)
	return ok
}

func (s *step) inline(n *flow.CompiledNode) bool {
	if s.e.cfg.HopPerNode {
		return false
	}
	spec, ok := s.e.spec(n.Type)
	return ok && spec.Pure
}

// runInline runs a pure node here and now. Pure nodes fail only on their
// own expressions, which another attempt would repeat, so they are not
// retried.
func (s *step) runInline(ctx context.Context, n *flow.CompiledNode) {
	start := s.e.cfg.Now().UTC()
	out, err := s.runNode(ctx, n, 1, nil)
	s.record(n, 1, start, out, err)
}

// runNode runs one node with its scope. A panicking node fails, as a
// node, with code "panic": another attempt would panic again, and the
// worker goes on.
func (s *step) runNode(ctx context.Context, n *flow.CompiledNode, attempt int, keepAlive func()) (out any, err error) {
	defer func() {
		if r := recover(); r != nil {
			s.e.log.Error("node panicked", "execution", s.ex.ID, "node", n.ID, "panic", r, "stack", string(debug.Stack()))
			out, err = nil, nodes.Permanent("panic", "the node failed unexpectedly: %v", r)
		}
	}()
	spec, ok := s.e.spec(n.Type)
	if !ok {
		return nil, nodes.Permanent("unsupported_node", "no worker runs %s nodes", n.Type)
	}
	sc, err := s.scope(n)
	if err != nil {
		return nil, err
	}
	var timeout time.Duration // of its expressions: ctx's deadline
	if spec.Pure {
		// A pure node runs its expressions under its timeoutMs (or
		// flow.DefaultEvalTimeout), stoppable by a cancel of its execution.
		timeout = n.Timeout
		if timeout <= 0 {
			timeout = flow.DefaultEvalTimeout
		}
		var cancel context.CancelFunc
		ctx, cancel = context.WithCancel(ctx)
		defer cancel()
		defer s.e.track(s.ex.ID, cancel)()
	}
	sc = sc.Bounded(ctx, timeout)
	if keepAlive == nil {
		keepAlive = func() {}
	}
	in := nodes.Input{
		Node: n, Scope: sc, ExecutionID: s.ex.ID, UserID: s.ex.UserID, Attempt: attempt,
		IdempotencyKey: s.ex.ID + ":" + n.ID, KeepAlive: keepAlive,
		Log: func(level, msg string) {
			s.upd.Logs = append(s.upd.Logs, persistence.NodeLog{NodeID: n.ID, At: s.e.cfg.Now().UTC(), Level: level, Message: msg})
		},
	}
	return spec.Runner.Run(ctx, in)
}

// record stores a node's result: completed with its output, or failed.
func (s *step) record(n *flow.CompiledNode, attempt int, start time.Time, out any, err error) {
	end := s.e.cfg.Now().UTC()
	st := &persistence.NodeState{Type: n.Type, Attempts: attempt, StartedAt: &start, FinishedAt: &end}
	if err == nil {
		// Outputs are mostly maps of what expressions give, which are
		// written by hand; the encoder takes the others.
		raw, ok, decoded := events.MarshalValue(out)
		var merr error
		if !ok {
			raw, merr = json.Marshal(out)
			decoded = merr == nil && decodedForm(out)
		}
		if merr != nil {
			err = nodes.Permanent("bad_output", "the node's output is not JSON: %v", merr)
		} else if big := s.tooLarge(n, len(raw)); big != nil {
			err = big
		} else {
			st.Status, st.Output = persistence.StatusCompleted, raw
			s.set(n.ID, st)
			// Successors read the output as decoding its JSON gives it
			// back, inline as across hops: the value itself when it is
			// already that, else decoded from the JSON on use.
			if decoded {
				s.outputs[n.ID] = out
			} else {
				delete(s.outputs, n.ID)
			}
			return
		}
	}
	ne := nodes.Classify(err)
	st.Status, st.Error = persistence.StatusFailed, &persistence.NodeError{Code: ne.Code, Message: ne.Message}
	s.set(n.ID, st)
	s.upd.Logs = append(s.upd.Logs, persistence.NodeLog{NodeID: n.ID, At: end, Level: "error", Message: ne.Error()})
	if n.OnError != "continue" {
		s.failure = &persistence.ExecutionError{NodeID: n.ID, Code: ne.Code, Message: ne.Message}
	}
}

// tooLarge fails an output of size bytes that passes the node's cap, or
// that would make its execution hold more than the execution's: its
// inputs and every node's output (an OUTPUT node's twice, as the
// execution's output repeats it).
func (s *step) tooLarge(n *flow.CompiledNode, size int) *nodes.Error {
	if limit := s.e.cfg.MaxOutputBytes; size > limit {
		return nodes.Permanent("output_too_large", "the node's output is %d bytes of JSON; at most %d are allowed", size, limit)
	}
	held := len(s.ex.Inputs)
	for id, st := range s.ex.Nodes {
		if id == n.ID || st == nil {
			continue
		}
		held += len(st.Output)
		if st.Type == flow.TypeOutput {
			held += len(st.Output)
		}
	}
	if n.Type == flow.TypeOutput {
		size *= 2
	}
	if limit := s.e.cfg.MaxExecutionBytes; held+size > limit {
		return nodes.Permanent("output_too_large", "with this node's output of %d bytes of JSON, the execution would hold %d bytes; at most %d are allowed", size, held+size, limit)
	}
	return nil
}

// decodedForm reports whether v is what decoding its own JSON encoding
// gives back: nil, booleans, finite float64s, strings of valid UTF-8,
// []any and map[string]any (not nil: those encode as null) of those.
// Anything else (integers, other types, which decode as something else)
// is decoded from the JSON. Successors then share the value (an INPUT
// node's output is the map expressions see as input): runners and
// expressions must not change what they are given or what they returned,
// and none does (expr-lang cannot, flow.Render and the pure runners build
// new values).
func decodedForm(v any) bool {
	switch x := v.(type) {
	case nil, bool:
		return true
	case float64:
		return !math.IsNaN(x) && !math.IsInf(x, 0)
	case string:
		return utf8.ValidString(x)
	case []any:
		if x == nil {
			return false
		}
		for _, e := range x {
			if !decodedForm(e) {
				return false
			}
		}
		return true
	case map[string]any:
		if x == nil {
			return false
		}
		for k, e := range x {
			if !utf8.ValidString(k) || !decodedForm(e) {
				return false
			}
		}
		return true
	}
	return false
}

// finishIfDone ends the execution when a node failed it or every node is
// resolved.
func (s *step) finishIfDone() {
	if s.failure != nil {
		for _, id := range s.g.Order {
			if st := s.status(id); !persistence.Terminal(st) {
				s.set(id, &persistence.NodeState{Type: s.g.Nodes[id].Type, Status: persistence.StatusCancelled})
			}
		}
		s.upd.Finish = &persistence.Finish{Status: persistence.StatusFailed, Error: s.failure, At: s.e.cfg.Now().UTC()}
		s.finished = true
		return
	}
	for _, id := range s.g.Order {
		if !persistence.Terminal(s.status(id)) {
			return
		}
	}
	out, err := s.mergeOutputs()
	if err != nil {
		s.upd.Finish = &persistence.Finish{Status: persistence.StatusFailed, At: s.now,
			Error: &persistence.ExecutionError{Code: "bad_output", Message: err.Error()}}
	} else {
		s.upd.Finish = &persistence.Finish{Status: persistence.StatusCompleted, Output: out, At: s.e.cfg.Now().UTC()}
	}
	s.finished = true
}

// mergeOutputs is the execution's output: the value of its OUTPUT node
// when the workflow has one, or an object of the values of several by node
// id (null for one that did not complete). The shape depends on the
// workflow, never on what ran.
func (s *step) mergeOutputs() (json.RawMessage, error) {
	var ids []string
	for _, id := range s.g.Order {
		if s.g.Nodes[id].Type == flow.TypeOutput {
			ids = append(ids, id)
		}
	}
	value := func(id string) json.RawMessage {
		if n := s.ex.Nodes[id]; n != nil && n.Status == persistence.StatusCompleted && len(n.Output) > 0 {
			return n.Output
		}
		return jsonNull
	}
	switch len(ids) {
	case 0:
		return jsonNull, nil
	case 1:
		return value(ids[0]), nil
	}
	merged := make(map[string]json.RawMessage, len(ids))
	for _, id := range ids {
		merged[id] = value(id)
	}
	return json.Marshal(merged)
}

// commit writes the step and then publishes its tasks and events, waiting
// for every PubAck: only then may the caller ack its message. It reports
// whether the execution is still going (so a caller may advance again with
// the state the store now has).
func (s *step) commit(ctx context.Context) (*persistence.Execution, error) {
	s.upd.Reload = !s.finished && s.hasOpenEffects()
	res, err := s.e.store.ApplyExecution(ctx, s.upd)
	if err != nil {
		return nil, err
	}
	var futures []jetstream.PubAckFuture
	publish := func(subject, msgID string, v any) error {
		data, err := encodeMessage(v)
		if err != nil {
			return err
		}
		f, err := s.e.js.PublishMsgAsync(newMsg(subject, msgID, data))
		if err != nil {
			return err
		}
		futures = append(futures, f)
		return nil
	}
	if res.Ended || (s.finished && !res.Finished) || (res.Execution != nil && persistence.Terminal(res.Execution.Status) && !res.Finished) {
		// Ended by someone else meanwhile (a cancel): this step's writes
		// were ignored, and it announces nothing and schedules nothing.
		return res.Execution, nil
	}
	// Events before tasks: a successor's events are then stored after this
	// step's, in whichever process the successor runs.
	if err := s.publishEvents(publish, res.Finished); err != nil {
		return nil, err
	}
	for _, id := range s.tasks {
		n := s.g.Nodes[id]
		if err := publish(events.TaskSubject(n.Type), events.TaskMsgID(s.ex.ID, id), events.Task{ExecutionID: s.ex.ID, NodeID: id}); err != nil {
			return nil, err
		}
	}
	if err := awaitAcks(ctx, futures); err != nil {
		return nil, err
	}
	return res.Execution, nil
}

// hasOpenEffects reports whether nodes may still be resolved elsewhere, by
// workers running tasks: then the step reloads the state after writing,
// so the last of two racing predecessors of a join sees both resolved.
func (s *step) hasOpenEffects() bool {
	for _, id := range s.g.Order {
		if !persistence.Terminal(s.status(id)) && !s.inline(s.g.Nodes[id]) {
			return true
		}
	}
	return false
}

func (s *step) publishEvents(publish func(subject, msgID string, v any) error, won bool) error {
	base := events.Event{ExecutionID: s.ex.ID, UserID: s.ex.UserID, WorkflowID: s.ex.WorkflowID, At: s.now}
	if s.finished {
		if !won {
			// Another finisher (a cancel, a racing worker) ended it first and
			// publishes the end.
			return nil
		}
		return s.publishEnd(publish, base, s.changed)
	}
	if s.upd.Start != nil {
		ev := base
		ev.Kind = events.KindStarted
		if err := publish(events.EventSubject(s.ex.ID, ev.Kind), s.ex.ID+".started", ev); err != nil {
			return err
		}
	}
	if len(s.changed) > 0 {
		ev := base
		ev.Kind, ev.Nodes = events.KindNode, s.changed
		if err := publish(events.EventSubject(s.ex.ID, ev.Kind), s.ex.ID+".node."+nodeKey(s.changed), ev); err != nil {
			return err
		}
	}
	return nil
}

// publishEnd publishes the terminal event, with the whole execution.
func (s *step) publishEnd(publish func(subject, msgID string, v any) error, base events.Event, changed []events.NodeEvent) error {
	ex := s.ex
	if f := s.upd.Finish; f != nil {
		ex.Status, ex.Output, ex.Error, ex.FinishedAt = f.Status, f.Output, f.Error, &f.At
	}
	ev := base
	ev.Kind, ev.Nodes = ex.Status, changed
	if ex.FinishedAt != nil {
		ev.At = *ex.FinishedAt // the end, not the start of the step that reached it
	}
	if ex.StartedAt != nil && ex.FinishedAt != nil {
		ev.DurationMs = float64(ex.FinishedAt.Sub(*ex.StartedAt).Microseconds()) / 1000
	}
	if ex.Error != nil {
		ev.Error = events.Errorf(ex.Error.Code, "%s", ex.Error.Message)
	}
	data, err := events.Encode(&ev)
	if err != nil {
		return err
	}
	// The result first: waiters answer from it without reading the
	// store. Handed to this process's waiters directly, and over core
	// NATS to the others, like the event's own delivery to them: lost
	// only with a subscriber's connection. Over NATS it may go out on
	// another connection than the event (see events.LocalResults), so a
	// subscriber to both may get them in either order.
	if err := events.PublishResult(s.e.js.Conn(), s.e.cfg.Results, ex.ID, data, View(ex, nil)); err != nil {
		// Best effort, like every core NATS message: the end event, which
		// must be stored, goes out all the same (waiters then read the
		// store, or learn of the end from a later poll).
		s.e.log.Warn("result not published whole", "execution", ex.ID, "err", err)
	}
	// The end is published once per execution for good, not only within
	// the duplicate window: the stream refuses it when its subject holds a
	// message already (see publishOnce).
	return publish(events.EventSubject(ex.ID, ev.Kind), onceMsgID(ex.ID+"."+ev.Kind), data)
}

// encodeMessage is a message's payload: v encoded, or v itself if it is
// encoded already.
func encodeMessage(v any) ([]byte, error) {
	if b, ok := v.([]byte); ok {
		return b, nil
	}
	return json.Marshal(v)
}

// onceMarker prefixes the msg id of a message that must be stored at most
// once on its subject, ever.
const onceMarker = "once:"

func onceMsgID(id string) string { return onceMarker + id }

// newMsg builds a message with its Nats-Msg-Id; a once-id also asks the
// stream to refuse it when its subject is not empty.
func newMsg(subject, msgID string, data []byte) *nats.Msg {
	m := nats.NewMsg(subject)
	m.Data = data
	if id, ok := strings.CutPrefix(msgID, onceMarker); ok {
		m.Header.Set(jetstream.ExpectedLastSubjSeqHeader, "0")
		msgID = id
	}
	m.Header.Set(events.HeaderMsgID, msgID)
	return m
}

// awaitAcks waits for PubAcks. A refusal because the subject is not empty
// is what a once-message wants when it was published before.
func awaitAcks(ctx context.Context, futures []jetstream.PubAckFuture) error {
	for _, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			var apiErr *jetstream.APIError
			if errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
				apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant) {
				continue
			}
			return err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// republishEnd publishes the terminal event of a finished execution again:
// a worker that died after recording the end and before acking left the
// event unsent, and its redelivered message has only this to do. The
// event's Nats-Msg-Id makes it a no-op when the first one went out.
//
// The end carries every resolved node: the worker that died may have
// recorded them without announcing them, and the projector counts each
// node of an execution once however often it is reported.
//
// An execution that ended before the oldest event the stream still holds
// is not announced again: its first end, if it went out, is gone from
// the stream, which could then not refuse a second one, and the projector
// keeps an ended execution's phase for seconds only; it would count the
// execution twice. Its counters stay as a rebuild from the stream would
// make them.
func (e *Engine) republishEnd(ctx context.Context, ex *persistence.Execution, g *flow.Graph) error {
	if ex.FinishedAt != nil {
		if st, err := e.js.Stream(ctx, events.StreamEvents); err == nil {
			if info, err := st.Info(ctx); err == nil && info.State.FirstTime.After(*ex.FinishedAt) {
				e.log.Debug("end not announced again: older than the event history", "execution", ex.ID)
				return nil
			}
		}
	}
	s := newStep(e, ex, g)
	var changed []events.NodeEvent
	for _, id := range g.Order {
		if n := ex.Nodes[id]; n != nil && persistence.Terminal(n.Status) {
			changed = append(changed, nodeEvent(id, n))
		}
	}
	var futures []jetstream.PubAckFuture
	err := s.publishEnd(func(subject, msgID string, v any) error {
		data, err := encodeMessage(v)
		if err != nil {
			return err
		}
		f, err := e.js.PublishMsgAsync(newMsg(subject, msgID, data))
		if err == nil {
			futures = append(futures, f)
		}
		return err
	}, events.Event{ExecutionID: ex.ID, UserID: ex.UserID, WorkflowID: ex.WorkflowID, At: s.now}, changed)
	if err != nil {
		return err
	}
	return awaitAcks(ctx, futures)
}

// nodeKey names a set of node transitions for the event's Nats-Msg-Id.
func nodeKey(changed []events.NodeEvent) string {
	var b strings.Builder
	for i, c := range changed {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(c.ID)
		b.WriteByte(':')
		b.WriteString(c.Status)
	}
	return b.String()
}

func slicesContains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// drive advances an execution and commits, again with the reloaded state
// while that makes progress (another worker resolved a node meanwhile).
func (e *Engine) drive(ctx context.Context, s *step) error {
	for range len(s.g.Order) + 2 {
		s.advance(ctx)
		fresh, err := s.commit(ctx)
		if err != nil {
			return err
		}
		if fresh == nil || persistence.Terminal(fresh.Status) {
			return nil
		}
		next := newStep(e, fresh, s.g)
		next.sent = s.sent
		if next.sent == nil {
			next.sent = map[string]bool{}
		}
		for _, id := range s.tasks {
			next.sent[id] = true
		}
		if !next.canMove() {
			return nil
		}
		s = next
	}
	return nil
}

// canMove reports whether a node is ready that this worker has not yet
// handled.
func (s *step) canMove() bool {
	done := true
	for _, id := range s.g.Order {
		st := s.status(id)
		if !persistence.Terminal(st) {
			done = false
		}
		if st != persistence.NodePending || s.sent[id] {
			continue
		}
		if ready, _ := s.readiness(s.g.Nodes[id]); ready {
			return true
		}
	}
	return done
}
