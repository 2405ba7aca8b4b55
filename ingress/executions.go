package ingress

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	json "github.com/goccy/go-json"
	"github.com/gofiber/fiber/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/weftdev/weft/events"
	"github.com/weftdev/weft/persistence"
	"github.com/weftdev/weft/workers"
)

const (
	// maxWait caps ?wait=: a request is not held longer than this.
	maxWait = 60 * time.Second
	// executionCacheTTL is how long a finished execution is served from
	// Redis.
	executionCacheTTL = time.Hour
)

// waiters hands the ends of executions to the requests waiting for them:
// an execution's result (events.ResultSubject), published by whoever
// ends it, before its terminal event (on another connection, when it was
// handed over in process: see events.LocalResults). It is the terminal
// event with the whole execution in it, which they answer from, or
// without it (a refusal; an execution too large to travel, which they
// read from the store). One wildcard subscription serves every waiter of the process: a
// subscription per request costs twice as much.
//
// It also announces as queued the executions submitted here that have not
// ended within queuedAfter (see queueLater).
type waiters struct {
	mu   sync.Mutex
	byID map[string][]chan *events.Event
	sub  *nats.Subscription
	// open holds the executions submitted here whose end has not been
	// heard, in order of submission, with those ids in openIDs.
	open    []queuedLater
	openIDs map[string]struct{}
	publish func(*events.Event) // a queued event
	quit    chan struct{}
	done    chan struct{}
}

// queuedLater is an execution to announce as queued at due, unless it
// ends first.
type queuedLater struct {
	ev  events.Event
	due time.Time
}

func startWaiters(nc *nats.Conn, publish func(*events.Event)) (*waiters, error) {
	w := &waiters{byID: map[string][]chan *events.Event{}, openIDs: map[string]struct{}{}, publish: publish,
		quit: make(chan struct{}), done: make(chan struct{})}
	sub, err := nc.Subscribe(events.ResultFilter, w.deliver)
	if err != nil {
		return nil, err
	}
	_ = sub.SetPendingLimits(1<<20, 1<<30)
	// The server has the subscription before any submission goes out,
	// which may be on another connection.
	if err := nc.Flush(); err != nil {
		_ = sub.Unsubscribe()
		return nil, err
	}
	w.sub = sub
	go w.announce()
	return w, nil
}

func (w *waiters) stop() {
	_ = w.sub.Unsubscribe()
	close(w.quit)
	<-w.done
}

func (w *waiters) deliver(msg *nats.Msg) {
	id, _ := events.ExecutionOfResult(msg.Subject)
	w.mu.Lock()
	chans := w.byID[id]
	delete(w.byID, id)
	delete(w.openIDs, id)
	w.mu.Unlock()
	if len(chans) == 0 {
		return
	}
	// A result with its execution: the view is all a waiter reads.
	if view, ok := events.ResultExecution(msg); ok {
		ev := &events.Event{ExecutionID: id, Execution: view}
		for _, c := range chans {
			c <- ev
		}
		return
	}
	// Without: only what a waiter reads, the rest of the event skipped.
	var end struct {
		Kind      string          `json:"kind"`
		Error     *events.Error   `json:"error"`
		Execution json.RawMessage `json:"execution"`
	}
	if err := json.Unmarshal(msg.Data, &end); err != nil {
		return
	}
	ev := &events.Event{ExecutionID: id, Kind: end.Kind, Error: end.Error, Execution: end.Execution}
	for _, c := range chans {
		c <- ev
	}
}

// queueLater announces ex as queued if its end is not heard within
// queuedAfter. Most executions end in milliseconds: for them the event
// would cost a stored message, a subject in the stream's index and the
// projector's work, to move the dashboard's queued gauge up and down
// within a millisecond. The gauge counts what waits longer: a backlog. The
// projector takes a queued event that comes after started as the no-op it
// is. One goroutine does it for every execution, rather than a timer each.
func (w *waiters) queueLater(ex *persistence.Execution, now time.Time) {
	w.mu.Lock()
	w.openIDs[ex.ID] = struct{}{}
	w.open = append(w.open, queuedLater{due: now.Add(queuedAfter), ev: events.Event{ExecutionID: ex.ID,
		Kind: events.KindQueued, UserID: ex.UserID, WorkflowID: ex.WorkflowID, At: ex.CreatedAt}})
	w.mu.Unlock()
}

// forgetQueued drops an execution that will not run (its submission
// failed) from those to announce.
func (w *waiters) forgetQueued(id string) {
	w.mu.Lock()
	delete(w.openIDs, id)
	w.mu.Unlock()
}

// announce publishes the queued events that fall due, ten times a second.
func (w *waiters) announce() {
	defer close(w.done)
	t := time.NewTicker(queuedAfter / 10)
	defer t.Stop()
	for {
		select {
		case <-w.quit:
			return
		case now := <-t.C:
			w.mu.Lock()
			n := 0
			for n < len(w.open) && !w.open[n].due.After(now) {
				n++
			}
			var due []events.Event // copies: the array is reused below
			for _, q := range w.open[:n] {
				if _, open := w.openIDs[q.ev.ExecutionID]; open {
					delete(w.openIDs, q.ev.ExecutionID)
					due = append(due, q.ev)
				}
			}
			// The rest moves down; the array is reused while it is not
			// much larger than what it holds.
			rest := copy(w.open, w.open[n:])
			clear(w.open[rest:])
			w.open = w.open[:rest]
			if cap(w.open) > 1024 && rest < cap(w.open)/4 {
				w.open = slices.Clip(w.open)
			}
			w.mu.Unlock()
			for i := range due {
				w.publish(&due[i])
			}
		}
	}
}

// add registers interest in one execution's end; the func forgets it.
func (w *waiters) add(id string) (<-chan *events.Event, func()) {
	c := make(chan *events.Event, 1)
	w.mu.Lock()
	w.byID[id] = append(w.byID[id], c)
	w.mu.Unlock()
	return c, func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		list := w.byID[id]
		for i, x := range list {
			if x == c {
				w.byID[id] = append(list[:i], list[i+1:]...)
				break
			}
		}
		if len(w.byID[id]) == 0 {
			delete(w.byID, id)
		}
	}
}

type submitBody struct {
	WorkflowID string         `json:"workflowId"`
	Inputs     map[string]any `json:"inputs"`
}

// submitted is the outcome of a submission: the execution, and its end
// when the caller waited for it.
type submitted struct {
	ex  *persistence.Execution
	end *events.Event
}

// submit checks and records an execution, publishes it to the starter, and
// waits up to wait for its end. HTTP and the NATS run subject share it.
func (s *Server) submit(ctx context.Context, p *Principal, body submitBody, execID, idemKey string, wait time.Duration) (*submitted, error) {
	var f fieldChecks
	if body.WorkflowID == "" {
		f.add("workflowId", "is required")
	}
	if execID != "" && !workers.ValidExecutionID(execID) {
		f.add("executionId", "must be 1 to 64 letters, digits, '-' or '_'")
	}
	if err := f.err(); err != nil {
		return nil, err
	}
	w, err := s.wfCache.get(ctx, p.UserID, body.WorkflowID)
	if events.IsNotFound(err) {
		return nil, events.Errorf(events.CodeNotFound, "workflow not found")
	}
	if err != nil {
		return nil, err
	}
	chosen := execID != ""
	if !chosen {
		execID = newID()
	}
	ex, err := s.deps.Graphs.NewExecution(ctx, w, execID, body.Inputs, s.deps.Now())
	if err != nil {
		return nil, err
	}
	ex.IdempotencyKey = idemKey
	var (
		done   <-chan *events.Event
		forget = func() {}
	)
	if wait > 0 {
		done, forget = s.waiters.add(ex.ID)
	}
	defer func() { forget() }()
	if !chosen && idemKey == "" && len(s.deps.SubmitKey) > 0 && len(ex.Inputs) <= events.MaxAdmissionInputs {
		// A fresh id and no key: nothing to look up first.
		if wait > 0 {
			return s.submitAndWait(ctx, ex, done, wait)
		}
		stored, err := s.recordAndSubmit(ctx, ex)
		if err != nil {
			return nil, err
		}
		return &submitted{ex: stored}, nil
	}
	stored, created, err := s.deps.Store.CreateExecution(ctx, ex)
	if err != nil {
		return nil, err
	}
	if !created {
		// The same Idempotency-Key: the execution made the first time, if
		// this is the same request; a key reused for another one is a
		// client bug that must not pass for a success.
		if stored.WorkflowID != ex.WorkflowID || !bytes.Equal(stored.Inputs, ex.Inputs) {
			what := "Idempotency-Key"
			if idemKey == "" {
				what = "executionId"
			}
			return nil, events.Errorf(events.CodeConflict, "the %s was used for another request (workflow or inputs differ)", what)
		}
		if wait > 0 && !persistence.Terminal(stored.Status) {
			forget()
			done, forget = s.waiters.add(stored.ID)
			if fresh, err := s.deps.Store.LoadExecution(ctx, stored.ID); err == nil {
				stored = fresh
			}
		}
		if persistence.Terminal(stored.Status) || wait == 0 {
			return &submitted{ex: stored}, nil
		}
		return s.await(ctx, stored, done, wait)
	}
	s.waiters.queueLater(ex, time.Now())
	if _, err := s.deps.JS.PublishMsg(ctx, s.submission(stored)); err != nil {
		// Recorded but not published: the reconciler publishes it later.
		s.deps.Log.Warn("submission recorded but not published; the reconciler will", "execution", ex.ID, "err", err)
		return &submitted{ex: stored}, nil
	}
	if wait == 0 {
		return &submitted{ex: stored}, nil
	}
	return s.await(ctx, stored, done, wait)
}

// recordAndSubmit writes a new execution while its submission travels,
// rather than before: the signed submission carries the record, and a
// starter that gets it first records the execution itself (see
// ExecutionUpdate.Create). The caller waits for the longer of the two
// instead of their sum, and either way the execution is stored when the
// answer goes out. Only the record or the message needs to be durable for
// the execution to run: without the message, the reconciler submits the
// record again; without the record, the starter writes it.
func (s *Server) recordAndSubmit(ctx context.Context, ex *persistence.Execution) (*persistence.Execution, error) {
	ex, err := persistence.NormalizeExecution(ex, ex.CreatedAt)
	if err != nil {
		return nil, err
	}
	s.waiters.queueLater(ex, time.Now())
	ack, perr := s.deps.JS.PublishMsgAsync(s.submission(ex))
	_, _, cerr := s.deps.Store.CreateExecution(ctx, ex)
	if perr == nil {
		perr = awaitPubAck(ctx, ack.Ok(), ack.Err())
	}
	switch {
	case cerr != nil && perr != nil:
		s.waiters.forgetQueued(ex.ID) // there is nothing to announce
		return nil, cerr
	case cerr != nil:
		s.deps.Log.Warn("submission published but not recorded here; its starter records it", "execution", ex.ID, "err", cerr)
	case perr != nil:
		s.deps.Log.Warn("submission recorded but not published; the reconciler will", "execution", ex.ID, "err", perr)
	}
	// The execution as submitted, queued, even when a fast starter has
	// recorded more already: a submission is answered 202, and a waiting
	// caller gets the end from its event.
	return ex, nil
}

// awaitPubAck waits up to 5 s for a submission's PubAck: nil once it is
// stored, else why it is not known to be.
func awaitPubAck(ctx context.Context, acked <-chan *jetstream.PubAck, refused <-chan error) error {
	select {
	case <-acked:
		return nil
	case err := <-refused:
		return err
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(5 * time.Second):
		return errors.New("no acknowledgement from JetStream in 5 s")
	}
}

// submitAndWait submits a new execution and waits up to wait for its end,
// recording it only if the wait runs out. Most waited-for executions end
// within the wait, and their starter records them (see
// ExecutionUpdate.Create): a second write here would only be overwritten.
// When the wait runs out the execution is recorded before the 202 goes
// out, so that the caller can read it at once, whether the starter has
// reached it or not. Only the message must be durable for the execution
// to run; if it cannot be published, the record is written and the
// reconciler submits it.
func (s *Server) submitAndWait(ctx context.Context, ex *persistence.Execution, done <-chan *events.Event, wait time.Duration) (*submitted, error) {
	ex, err := persistence.NormalizeExecution(ex, ex.CreatedAt)
	if err != nil {
		return nil, err
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	s.waiters.queueLater(ex, time.Now())
	// Published without waiting for its PubAck first: the end cannot come
	// before it, and a refusal still comes in time to record the
	// execution for the reconciler.
	unpublished := func(err error) error {
		if _, _, cerr := s.deps.Store.CreateExecution(ctx, ex); cerr != nil {
			s.waiters.forgetQueued(ex.ID) // neither published nor recorded
			return cerr
		}
		s.deps.Log.Warn("submission recorded but not published; the reconciler will", "execution", ex.ID, "err", err)
		return nil
	}
	var (
		acked   <-chan *jetstream.PubAck
		refused <-chan error
	)
	if ack, err := s.deps.JS.PublishMsgAsync(s.submission(ex)); err != nil {
		if err := unpublished(err); err != nil {
			return nil, err
		}
	} else {
		acked, refused = ack.Ok(), ack.Err()
	}
wait:
	for {
		select {
		case ev := <-done:
			return s.ended(ctx, ex, ev), nil
		case <-acked:
			acked, refused = nil, nil
		case err := <-refused:
			acked, refused = nil, nil
			if err := unpublished(err); err != nil {
				return nil, err
			}
		case <-t.C:
			break wait
		case <-ctx.Done():
			break wait
		case <-s.done:
			break wait
		}
	}
	// Detached: a caller that left still gets its execution recorded.
	if _, _, err := s.deps.Store.CreateExecution(context.WithoutCancel(ctx), ex); err != nil {
		// Not recorded: the 202 may go out only once the submission is
		// known to be durable.
		if acked != nil {
			if perr := awaitPubAck(context.WithoutCancel(ctx), acked, refused); perr != nil {
				s.waiters.forgetQueued(ex.ID)
				return nil, errors.Join(err, perr)
			}
		}
		s.deps.Log.Warn("submission published but not recorded here; its starter records it", "execution", ex.ID, "err", err)
	}
	return &submitted{ex: ex}, nil
}

// submission is the message that hands a recorded execution to the
// starter. No credential travels with it: secrets are not kept in a
// stream. The record this process wrote after authenticating the caller
// is what lets the starter run it; a message without a credential can
// only resume an execution so recorded, never create one. Signed, it
// carries the record itself, and the starter spares the store a read.
func (s *Server) submission(ex *persistence.Execution) *nats.Msg {
	msg := nats.NewMsg(events.SubjectSubmit)
	msg.Header.Set(events.HeaderMsgID, ex.ID)
	if len(s.deps.SubmitKey) > 0 && len(ex.Inputs) <= events.MaxAdmissionInputs {
		msg.Data, _ = events.Encode(&events.Admission{ExecutionID: ex.ID, WorkflowID: ex.WorkflowID,
			WorkflowVersion: ex.WorkflowVersion, UserID: ex.UserID, CreatedAt: ex.CreatedAt, Inputs: ex.Inputs})
		msg.Header.Set(events.HeaderSignature, events.SignAdmission(s.deps.SubmitKey, msg.Data))
		return msg
	}
	msg.Data, _ = json.Marshal(events.SubmitRequest{WorkflowID: ex.WorkflowID, ExecutionID: ex.ID})
	return msg
}

// queuedAfter is how long an execution may wait for a starter before it is
// announced as queued.
const queuedAfter = time.Second

// publishQueued publishes an execution's queued event.
func (s *Server) publishQueued(ev *events.Event) {
	queued := nats.NewMsg(events.EventSubject(ev.ExecutionID, events.KindQueued))
	queued.Data, _ = json.Marshal(ev)
	queued.Header.Set(events.HeaderMsgID, ev.ExecutionID+"."+events.KindQueued)
	if _, err := s.deps.JS.PublishMsgAsync(queued); err != nil {
		s.deps.Log.Debug("queued event not published", "execution", ev.ExecutionID, "err", err)
	}
}

func (s *Server) await(ctx context.Context, ex *persistence.Execution, done <-chan *events.Event, wait time.Duration) (*submitted, error) {
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case ev := <-done:
		return s.ended(ctx, ex, ev), nil
	case <-t.C:
	case <-ctx.Done():
	case <-s.done:
	}
	return &submitted{ex: ex}, nil
}

// ended is a waited-for execution's outcome, from its end event.
func (s *Server) ended(ctx context.Context, ex *persistence.Execution, ev *events.Event) *submitted {
	if len(ev.Execution) == 0 && ev.Kind != events.KindRejected {
		// Too large to travel in the event: read it.
		if fresh, err := s.deps.Store.LoadExecution(ctx, ex.ID); err == nil {
			return &submitted{ex: fresh}
		}
	}
	return &submitted{ex: ex, end: ev}
}

func (s *Server) createExecution(c *fiber.Ctx) error {
	var body submitBody
	if err := decodeJSON(c.Body(), &body); err != nil {
		return err
	}
	wait, err := waitParam(c.Query("wait"))
	if err != nil {
		return err
	}
	key := c.Get("Idempotency-Key")
	if len(key) > 200 {
		return events.Invalid([]events.FieldError{{Path: "Idempotency-Key", Message: "must be at most 200 characters"}})
	}
	res, err := s.submit(c.UserContext(), principal(c), body, "", key, wait)
	if err != nil {
		return err
	}
	return s.sendSubmitted(c, res)
}

func (s *Server) sendSubmitted(c *fiber.Ctx, res *submitted) error {
	switch {
	case res.end != nil && res.end.Kind == events.KindRejected:
		return refusal(res.end.Error)
	case res.end != nil && len(res.end.Execution) > 0:
		// Not cached here: most waited-for executions are never read
		// again, and a cache entry per execution would fill Redis. A GET
		// caches what it reads.
		c.Set(fiber.HeaderContentType, fiber.MIMEApplicationJSON)
		return c.Status(fiber.StatusOK).Send(res.end.Execution)
	case persistence.Terminal(res.ex.Status):
		return c.Status(fiber.StatusOK).JSON(workers.View(res.ex, nil))
	}
	return c.Status(fiber.StatusAccepted).JSON(fiber.Map{"id": res.ex.ID, "status": res.ex.Status})
}

// refusal is the error a caller sees for a refused execution: the reason
// when it is one of the API's codes, else a plain internal error.
func refusal(reason *events.Error) error {
	if reason != nil {
		if _, known := statusByCode[reason.Code]; known {
			return reason
		}
	}
	return events.Errorf(events.CodeInternal, "the execution could not be started")
}

// waitParam reads ?wait= as a Go duration ("5s", "500ms") or seconds.
func waitParam(v string) (time.Duration, error) {
	if v == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		var secs float64
		if _, serr := fmt.Sscanf(v, "%g", &secs); serr != nil {
			return 0, events.Invalid([]events.FieldError{{Path: "wait", Message: "must be a duration such as 5s or 500ms"}})
		}
		d = time.Duration(secs * float64(time.Second))
	}
	if d < 0 {
		return 0, events.Invalid([]events.FieldError{{Path: "wait", Message: "must not be negative"}})
	}
	return min(d, maxWait), nil
}

func (s *Server) cacheKey(userID, id string) string { return "exec:" + userID + ":" + id }

// cacheExecution keeps a finished execution's view in Redis: it no longer
// changes, so it needs no invalidation.
func (s *Server) cacheExecution(ctx context.Context, userID, id string, view json.RawMessage) {
	if s.deps.Cache == nil {
		return
	}
	if err := s.deps.Cache.Set(ctx, s.cacheKey(userID, id), view, executionCacheTTL); err != nil {
		s.deps.Log.Debug("execution cache write failed", "err", err)
	}
}

func (s *Server) getExecution(c *fiber.Ctx) error {
	p := principal(c)
	id := c.Params("id")
	if s.deps.Cache != nil {
		var cached json.RawMessage
		if ok, _ := s.deps.Cache.Get(c.UserContext(), s.cacheKey(p.UserID, id), &cached); ok {
			c.Set(fiber.HeaderContentType, fiber.MIMEApplicationJSON)
			return c.Send(cached)
		}
	}
	view, ex, err := s.loadView(c.UserContext(), p.UserID, id)
	if err != nil {
		return err
	}
	raw, err := json.Marshal(view)
	if err != nil {
		return err
	}
	if persistence.Terminal(ex.Status) {
		s.cacheExecution(c.UserContext(), p.UserID, id, raw)
	}
	c.Set(fiber.HeaderContentType, fiber.MIMEApplicationJSON)
	return c.Send(raw)
}

// loadView reads an execution from the store and lists its pending nodes
// too, from its workflow version.
func (s *Server) loadView(ctx context.Context, userID, id string) (workers.ExecutionView, *persistence.Execution, error) {
	ex, err := s.deps.Store.GetExecution(ctx, userID, id)
	if err != nil {
		return workers.ExecutionView{}, nil, err
	}
	return s.view(ctx, ex), ex, nil
}

// view is an execution in its API shape, its pending nodes listed too,
// from its workflow version.
func (s *Server) view(ctx context.Context, ex *persistence.Execution) workers.ExecutionView {
	var types map[string]string
	if w, err := s.deps.Store.GetWorkflowVersion(ctx, ex.UserID, ex.WorkflowID, ex.WorkflowVersion); err == nil {
		if g, err := s.deps.Graphs.Graph(ctx, w); err == nil {
			types = make(map[string]string, len(g.Nodes))
			for nid, n := range g.Nodes {
				types[nid] = n.Type
			}
		}
	}
	return workers.View(ex, types)
}

func (s *Server) listExecutions(c *fiber.Ctx) error {
	page, err := pageParams(c)
	if err != nil {
		return err
	}
	f := persistence.ExecutionFilter{WorkflowID: c.Query("workflowId"), Status: c.Query("status")}
	switch f.Status {
	case "", persistence.StatusQueued, persistence.StatusRunning, persistence.StatusCompleted, persistence.StatusFailed, persistence.StatusCancelled:
	default:
		return events.Invalid([]events.FieldError{{Path: "status", Message: "must be queued, running, completed, failed or cancelled"}})
	}
	list, next, err := s.deps.Store.ListExecutions(c.UserContext(), principal(c).UserID, f, page)
	if err != nil {
		return err
	}
	items := make([]workers.ExecutionView, 0, len(list))
	for i := range list {
		items = append(items, workers.View(&list[i], nil))
	}
	return c.JSON(fiber.Map{"items": items, "nextCursor": nullable(next)})
}

func (s *Server) cancelExecution(c *fiber.Ctx) error {
	p := principal(c)
	ctx := c.UserContext()
	ex, err := s.deps.Store.GetExecution(ctx, p.UserID, c.Params("id"))
	if err != nil {
		return err
	}
	if persistence.Terminal(ex.Status) {
		return events.Errorf(events.CodeConflict, "the execution has already %s", ex.Status)
	}
	now := s.deps.Now().UTC()
	upd := persistence.ExecutionUpdate{ID: ex.ID, Nodes: map[string]*persistence.NodeState{},
		Finish: &persistence.Finish{Status: persistence.StatusCancelled, At: now}, Reload: true}
	var changed []events.NodeEvent
	for nid, n := range s.view(ctx, ex).Nodes {
		if !persistence.Terminal(n.Status) {
			upd.Nodes[nid] = &persistence.NodeState{Type: n.Type, Status: persistence.StatusCancelled}
			changed = append(changed, events.NodeEvent{ID: nid, Type: n.Type, Status: persistence.StatusCancelled})
		}
	}
	res, err := s.deps.Store.ApplyExecution(ctx, upd)
	if err != nil {
		return err
	}
	if !res.Finished {
		return events.Errorf(events.CodeConflict, "the execution finished before it could be cancelled")
	}
	final := res.Execution
	if final == nil {
		if final, err = s.deps.Store.GetExecution(ctx, p.UserID, ex.ID); err != nil {
			return err
		}
	}
	v := workers.View(final, nil)
	ev := events.Event{ExecutionID: ex.ID, Kind: events.KindCancelled, UserID: ex.UserID, WorkflowID: ex.WorkflowID,
		At: now, Nodes: changed}
	if final.StartedAt != nil {
		ev.DurationMs = float64(now.Sub(*final.StartedAt).Microseconds()) / 1000
	}
	data, _ := json.Marshal(ev)
	// The result first, with the execution, for the requests waiting for
	// it; then the event, stored without it.
	_ = events.PublishResult(s.deps.NC, s.deps.Results, ex.ID, data, v)
	msg := nats.NewMsg(events.EventSubject(ex.ID, events.KindCancelled))
	msg.Data = data
	msg.Header.Set(events.HeaderMsgID, ex.ID+"."+events.KindCancelled)
	// Waiters and running nodes learn of the cancel from this event: try
	// hard to send it.
	for attempt := 1; attempt <= 3; attempt++ {
		if _, err = s.deps.JS.PublishMsg(ctx, msg); err == nil {
			break
		}
		s.deps.Log.Warn("cancel event not published", "execution", ex.ID, "attempt", attempt, "err", err)
		time.Sleep(time.Duration(attempt) * 100 * time.Millisecond)
	}
	return c.JSON(v)
}

func (s *Server) executionLogs(c *fiber.Ctx) error {
	logs, err := s.deps.Store.ExecutionLogs(c.UserContext(), principal(c).UserID, c.Params("id"), 1000)
	if err != nil {
		return err
	}
	type line struct {
		NodeID  string    `json:"nodeId"`
		At      time.Time `json:"at"`
		Level   string    `json:"level"`
		Message string    `json:"message"`
	}
	items := make([]line, 0, len(logs))
	for _, l := range logs {
		items = append(items, line{l.NodeID, l.At, l.Level, l.Message})
	}
	return c.JSON(fiber.Map{"items": items})
}

// withExecution is a terminal event with the execution, read from the
// store, as its result carries it; the event as it came if the execution
// cannot be read or the event is not a JSON object.
func (s *Server) withExecution(userID, id string, event []byte) []byte {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	go func() { // nor past shutdown
		select {
		case <-s.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	ex, err := s.deps.Store.GetExecution(ctx, userID, id)
	if err != nil {
		return event
	}
	view := workers.View(ex, nil)
	m, err := events.Result(new(bytes.Buffer), id, event, &view)
	if err != nil {
		return event
	}
	return m.Data
}

// executionEvents streams an execution's transitions as Server-Sent
// Events: first a snapshot of its state, then every event as it is
// published, and the stream ends with the execution.
func (s *Server) executionEvents(c *fiber.Ctx) error {
	p := principal(c)
	id := c.Params("id")
	ctx := c.UserContext()
	// Subscribe before the snapshot so nothing falls between them.
	ch := make(chan *nats.Msg, 256)
	sub, err := s.deps.NC.ChanSubscribe(events.EventFilter(id), ch)
	if err != nil {
		return err
	}
	// The result, into the same channel: unlike the terminal event it
	// carries the whole execution, so whichever of the two comes first is
	// sent, with the execution (see withExecution).
	result, err := s.deps.NC.ChanSubscribe(events.ResultSubject(id), ch)
	if err != nil {
		_ = sub.Unsubscribe()
		return err
	}
	// An AI node's text as it is generated, between its events. Tokens
	// have a channel of their own: a client too slow for a burst of them
	// loses tokens (the node's output has the whole text), never an event.
	tch := make(chan *nats.Msg, 1024)
	tokens, err := s.deps.NC.ChanSubscribe(events.TokenFilter(id), tch)
	if err != nil {
		_ = sub.Unsubscribe()
		_ = result.Unsubscribe()
		return err
	}
	unsubscribe := func() { _ = sub.Unsubscribe(); _ = result.Unsubscribe(); _ = tokens.Unsubscribe() }
	// The server has the subscriptions before the snapshot is read.
	if err := s.deps.NC.FlushTimeout(5 * time.Second); err != nil {
		unsubscribe()
		return err
	}
	view, ex, err := s.loadView(ctx, p.UserID, id)
	if err != nil {
		unsubscribe()
		return err
	}
	snapshot, _ := json.Marshal(view)
	finished := persistence.Terminal(ex.Status)
	done := s.done
	c.Set(fiber.HeaderContentType, "text/event-stream")
	c.Set(fiber.HeaderCacheControl, "no-store")
	c.Set(fiber.HeaderConnection, "keep-alive")
	c.Set("X-Accel-Buffering", "no")
	c.Context().SetBodyStreamWriter(func(w *bufio.Writer) {
		defer unsubscribe()
		write := func(event string, data []byte) bool {
			fmt.Fprintf(w, "event: %s\ndata: %s\n\n", event, data)
			return w.Flush() == nil
		}
		if !write("snapshot", snapshot) || finished {
			write("end", []byte(`{"status":"`+ex.Status+`"}`))
			return
		}
		heartbeat := time.NewTicker(s.cfg.SSEHeartbeat)
		defer heartbeat.Stop()
		for {
			select {
			case m := <-tch:
				if !write("token", m.Data) {
					return
				}
			case m := <-ch:
				kind := m.Subject[strings.LastIndexByte(m.Subject, '.')+1:]
				data := m.Data
				if _, ok := events.ExecutionOfResult(m.Subject); ok {
					var end struct {
						Kind string `json:"kind"`
					}
					if json.Unmarshal(m.Data, &end) != nil || !events.TerminalKind(end.Kind) {
						continue
					}
					kind = end.Kind
				} else if events.TerminalKind(kind) {
					// The terminal event came before the result: a result
					// handed over in the process that ended the execution
					// goes out on another connection than the event (see
					// events.LocalResults). The store has the execution
					// once its end is published.
					data = s.withExecution(p.UserID, id, m.Data)
				}
				if !write(kind, data) {
					return
				}
				if events.TerminalKind(kind) || kind == events.KindRejected {
					write("end", []byte(`{"status":"`+kind+`"}`))
					return
				}
			case <-heartbeat.C:
				if _, err := w.WriteString(": keep-alive\n\n"); err != nil || w.Flush() != nil {
					return
				}
				// Should the end have been dropped on the way (a client
				// slower than a flood of events), the store still knows:
				// end the stream rather than keep a client waiting forever.
				lctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				ex, err := s.deps.Store.GetExecution(lctx, p.UserID, id)
				cancel()
				if err == nil && persistence.Terminal(ex.Status) {
					write("end", []byte(`{"status":"`+ex.Status+`"}`))
					return
				}
			case <-done:
				return
			}
		}
	})
	return nil
}
