package workers

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"regexp"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/oklog/ulid/v2"

	"github.com/weftdev/weft/events"
	"github.com/weftdev/weft/persistence"
	"github.com/weftdev/weft/workers/flow"
)

// validExecutionID is what a caller may choose as an execution id: it
// becomes a subject token, so no dots, spaces or wildcards.
var validExecutionID = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// handleSubmit starts an execution from a submission. An execution the
// store already has was accepted by the ingress (or by an earlier delivery
// of this message) and is started as stored; any other submission is
// checked like an HTTP one: credential, workflow, inputs.
func (e *Engine) handleSubmit(ctx context.Context, m jetstream.Msg) {
	md, err := m.Metadata()
	if err != nil {
		_ = m.Term()
		return
	}
	var req events.SubmitRequest
	if err := decodeStrict(m.Data(), &req); err != nil {
		e.reject(ctx, m, "", events.Invalid([]events.FieldError{{Path: "", Message: err.Error()}}))
		return
	}
	id := req.ExecutionID
	if id == "" {
		id = derivedID(md)
	} else if !validExecutionID.MatchString(id) {
		e.reject(ctx, m, "", events.Invalid([]events.FieldError{{Path: "executionId", Message: "must be 1 to 64 letters, digits, '-' or '_'"}}))
		return
	}
	ex, err := e.store.LoadExecution(ctx, id)
	if events.IsNotFound(err) {
		ex, err = e.accept(ctx, m, id, &req, md.Timestamp)
	}
	if err != nil {
		e.failMessage(ctx, m, md, id, err)
		return
	}
	g, err := e.graph(ctx, ex.UserID, ex.WorkflowID, ex.WorkflowVersion)
	if err != nil {
		e.failMessage(ctx, m, md, id, err)
		return
	}
	if persistence.Terminal(ex.Status) {
		if md.NumDelivered > 1 {
			// See handleTask: the end may not have been announced.
			if err := e.republishEnd(ctx, ex, g); err != nil {
				e.failMessage(ctx, m, md, id, err)
				return
			}
		}
		_ = m.Ack()
		return
	}
	s := newStep(e, ex, g)
	s.begin()
	if err := e.drive(ctx, s); err != nil {
		e.failMessage(ctx, m, md, id, err)
		return
	}
	_ = m.Ack()
}

// accept checks a direct submission and records it as a queued execution.
func (e *Engine) accept(ctx context.Context, m jetstream.Msg, id string, req *events.SubmitRequest, at time.Time) (*persistence.Execution, error) {
	if e.verify == nil {
		return nil, events.Errorf(events.CodeUnauthorized, "this process cannot verify credentials")
	}
	userID, err := e.verify(ctx, Credential(m.Headers()))
	if err != nil {
		return nil, err
	}
	if req.WorkflowID == "" {
		return nil, events.Invalid([]events.FieldError{{Path: "workflowId", Message: "is required"}})
	}
	w, err := e.store.GetWorkflow(ctx, userID, req.WorkflowID)
	if events.IsNotFound(err) {
		return nil, events.Errorf(events.CodeNotFound, "workflow not found")
	}
	if err != nil {
		return nil, err
	}
	ex, err := e.NewExecution(ctx, w, id, req.Inputs, at)
	if err != nil {
		return nil, err
	}
	stored, _, err := e.store.CreateExecution(ctx, ex)
	return stored, err
}

// NewExecution checks inputs against a workflow's INPUT fields (defaults
// filled in) and returns the queued execution of its latest version, as
// the HTTP API and a direct submission both record it.
func (e *Engine) NewExecution(ctx context.Context, w *persistence.Workflow, id string, inputs map[string]any, at time.Time) (*persistence.Execution, error) {
	g, err := e.Graph(ctx, w)
	if err != nil {
		return nil, err
	}
	checked, problems := flow.ValidateInputs(g.Definition, inputs)
	if len(problems) > 0 {
		return nil, events.Invalid(problems)
	}
	raw, err := json.Marshal(checked)
	if err != nil {
		return nil, err
	}
	return &persistence.Execution{
		ID: id, UserID: w.UserID, WorkflowID: w.ID, WorkflowVersion: w.Version,
		Status: persistence.StatusQueued, Inputs: raw, CreatedAt: at.UTC(),
	}, nil
}

// Credential reads the caller's credential from a message's headers.
func Credential(h nats.Header) string {
	if k := h.Get(events.HeaderAPIKey); k != "" {
		return strings.TrimSpace(k)
	}
	if a := h.Get(events.HeaderAuthorization); a != "" {
		if scheme, tok, ok := strings.Cut(a, " "); ok && strings.EqualFold(scheme, "Bearer") {
			return strings.TrimSpace(tok)
		}
	}
	return ""
}

// derivedID is the execution id of a submission that names none: the same
// for every delivery of the message, so a redelivery is the same execution.
func derivedID(md *jetstream.MsgMetadata) string {
	sum := sha256.Sum256([]byte(md.Stream + "/" + strconvU(md.Sequence.Stream)))
	id, _ := ulid.New(ulid.Timestamp(md.Timestamp), bytes.NewReader(sum[:]))
	return strings.ToLower(id.String())
}

func strconvU(v uint64) string {
	var b [20]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + v%10)
		v /= 10
		if v == 0 {
			return string(b[i:])
		}
	}
}

// failMessage handles an error of a submission or task: a coded error
// that another attempt would repeat refuses the message; anything else is
// retried with backoff until the consumer's MaxDeliver, where the message
// is refused and kept rather than dropped.
func (e *Engine) failMessage(ctx context.Context, m jetstream.Msg, md *jetstream.MsgMetadata, executionID string, err error) {
	var coded *events.Error
	if errors.As(err, &coded) && coded.Code != events.CodeInternal && coded.Code != events.CodeUnavailable {
		e.reject(ctx, m, executionID, coded)
		return
	}
	if md.NumDelivered >= 8 {
		e.log.Error("giving up on a message", "subject", m.Subject(), "execution", executionID, "err", err)
		e.reject(ctx, m, executionID, events.Errorf(events.CodeUnavailable, "could not be processed after %d attempts", md.NumDelivered))
		return
	}
	e.log.Warn("will retry a message", "subject", m.Subject(), "execution", executionID, "attempt", md.NumDelivered, "err", err)
	_ = m.NakWithDelay(retryDelay(time.Second, int(md.NumDelivered), 0))
}

// reject refuses a message for good: it is kept in WEFT_REJECTED with its
// reason (credentials removed), a rejected event is published when the
// execution is known, and the message is terminated.
func (e *Engine) reject(ctx context.Context, m jetstream.Msg, executionID string, reason *events.Error) {
	why, _ := json.Marshal(reason)
	keep := nats.NewMsg(events.RejectedSubject(reason.Code))
	keep.Data = m.Data()
	for k, vs := range m.Headers() {
		switch k {
		case events.HeaderAPIKey, events.HeaderAuthorization, events.HeaderMsgID:
			continue
		}
		keep.Header[k] = vs
	}
	keep.Header.Set(events.HeaderReason, string(why))
	keep.Header.Set("Weft-Subject", m.Subject())
	if md, err := m.Metadata(); err == nil {
		keep.Header.Set(events.HeaderMsgID, md.Stream+"."+strconvU(md.Sequence.Stream))
	}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := e.js.PublishMsg(pctx, keep); err != nil {
		e.log.Error("could not keep a rejected message", "err", err)
	}
	if executionID != "" {
		ev := events.Event{ExecutionID: executionID, Kind: events.KindRejected, At: e.cfg.Now().UTC(), Error: reason}
		if data, err := json.Marshal(ev); err == nil {
			_ = e.nc.Publish(events.EventSubject(executionID, events.KindRejected), data)
		}
	}
	e.log.Info("message refused", "subject", m.Subject(), "execution", executionID, "code", reason.Code, "reason", reason.Message)
	_ = m.TermWithReason(reason.Code)
}

// retryDelay is base doubled per attempt, capped at five minutes, with
// jitter over its upper half, and never below retryAfter.
func retryDelay(base time.Duration, attempt int, retryAfter time.Duration) time.Duration {
	if base <= 0 {
		base = time.Second
	}
	d := base
	for i := 1; i < attempt && d < 5*time.Minute; i++ {
		d *= 2
	}
	d = min(d, 5*time.Minute)
	d = d/2 + rand.N(d/2+1)
	return max(d, retryAfter)
}

// decodeStrict decodes one JSON object, refusing unknown fields.
func decodeStrict(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return errors.New("the message is not the JSON object expected: " + err.Error())
	}
	if dec.More() {
		return errors.New("unexpected data after the JSON object")
	}
	return nil
}
