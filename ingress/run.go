package ingress

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/weftdev/weft/events"
	"github.com/weftdev/weft/persistence"
	"github.com/weftdev/weft/workers"
)

// runTimeout is how long a weft.executions.run request waits for its
// execution unless the Weft-Timeout header says otherwise.
const runTimeout = 30 * time.Second

// runConcurrency bounds the run requests a process serves at once; each
// may wait a minute for its execution.
const runConcurrency = 1024

// serveRunAsync hands each run request to a goroutine of its own: a NATS
// subscription calls its handler one message at a time.
func (s *Server) serveRunAsync(msg *nats.Msg) {
	select {
	case s.runSlots <- struct{}{}:
	default:
		data, _ := json.Marshal(map[string]any{"error": events.Errorf(events.CodeRateLimited, "too many run requests in flight")})
		_ = msg.Respond(data)
		return
	}
	go func() {
		defer func() { <-s.runSlots }()
		s.serveRun(msg)
	}()
}

// serveRun answers a core NATS request on weft.executions.run: the same
// checks and records as POST /api/executions, then the whole execution
// once it ends, or an error object.
func (s *Server) serveRun(msg *nats.Msg) {
	reply := func(v any) {
		data, _ := json.Marshal(v)
		_ = msg.Respond(data)
	}
	fail := func(err error) {
		var e *events.Error
		if !errors.As(err, &e) || e.Code == events.CodeInternal {
			s.deps.Log.Error("run request failed", "err", err)
			e = events.Errorf(events.CodeInternal, "internal error")
		}
		reply(map[string]any{"error": e})
	}
	if msg.Reply == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), maxWait+5*time.Second)
	defer cancel()
	cred := workers.Credential(msg.Header)
	p, err := s.auth.Authenticate(ctx, cred)
	if err != nil {
		fail(err)
		return
	}
	var req events.SubmitRequest
	if err := decodeJSON(msg.Data, &req); err != nil {
		fail(err)
		return
	}
	wait := runTimeout
	if h := msg.Header.Get("Weft-Timeout"); h != "" {
		if wait, err = waitParam(h); err != nil {
			fail(err)
			return
		}
	}
	res, err := s.submit(ctx, p, submitBody{WorkflowID: req.WorkflowID, Inputs: req.Inputs}, req.ExecutionID, "", wait)
	if err != nil {
		fail(err)
		return
	}
	switch {
	case res.end != nil && res.end.Kind == events.KindRejected:
		fail(refusal(res.end.Error))
	case res.end != nil && len(res.end.Execution) > 0:
		_ = msg.Respond(res.end.Execution)
	case persistence.Terminal(res.ex.Status):
		reply(workers.View(res.ex, nil))
	default:
		reply(map[string]any{"error": events.Errorf("timeout", "execution %s did not finish within %s; GET /api/executions/%s", res.ex.ID, wait, res.ex.ID)})
	}
}
