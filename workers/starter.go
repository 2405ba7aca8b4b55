package workers

import (
	"bytes"
	"context"
	"crypto/sha256"
	stdjson "encoding/json"
	"errors"
	"math/rand/v2"
	"regexp"
	"strings"
	"time"

	json "github.com/goccy/go-json"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/oklog/ulid/v2"

	"github.com/weftdev/weft/events"
	"github.com/weftdev/weft/persistence"
)

// validExecutionID is what a caller may choose as an execution id: it
// becomes a subject token, so no dots, spaces or wildcards.
var validExecutionID = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// ValidExecutionID reports whether a caller may name an execution id.
func ValidExecutionID(id string) bool { return validExecutionID.MatchString(id) }

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
	if sig := m.Headers().Get(events.HeaderSignature); sig != "" {
		e.handleAdmission(ctx, m, md, sig)
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
	switch {
	case events.IsNotFound(err):
		ex, err = e.accept(ctx, m, id, &req, md.Timestamp)
	case err == nil && Credential(m.Headers()) != "":
		// A direct publisher naming an execution that exists: it is a
		// resend of the caller's own, or a conflict.
		err = e.sameCaller(ctx, m, ex, &req)
	}
	// A message without a credential can only resume an execution that an
	// authenticated caller recorded (the ingress, or a first delivery): it
	// cannot create one.
	if err != nil {
		e.failMessage(ctx, m, md, id, err)
		return
	}
	e.start(ctx, m, md, ex, false)
}

// handleAdmission starts an execution the ingress recorded and signed. A
// first delivery runs from the message alone, and records the execution
// should the ingress's own write of it not have landed yet (the ingress
// writes while the submission travels); should it have been cancelled
// meanwhile, the store refuses the step's writes (see ApplyResult.Ended).
// A redelivery may follow a crash anywhere, so it starts from the store,
// the truth, when the store has it.
func (e *Engine) handleAdmission(ctx context.Context, m jetstream.Msg, md *jetstream.MsgMetadata, sig string) {
	if !events.VerifyAdmission(e.cfg.SubmitKey, m.Data(), sig) {
		e.reject(ctx, m, "", events.Errorf(events.CodeUnauthorized, "the submission's signature is not valid"))
		return
	}
	var ad events.Admission
	if err := decodeAdmission(m.Data(), &ad); err != nil || !validExecutionID.MatchString(ad.ExecutionID) {
		e.reject(ctx, m, "", events.Errorf(events.CodeInvalid, "a signed submission this version cannot read"))
		return
	}
	ex := &persistence.Execution{ID: ad.ExecutionID, UserID: ad.UserID, WorkflowID: ad.WorkflowID,
		WorkflowVersion: ad.WorkflowVersion, Status: persistence.StatusQueued, Inputs: ad.Inputs, CreatedAt: ad.CreatedAt}
	create := true
	if md.NumDelivered > 1 {
		stored, err := e.store.LoadExecution(ctx, ad.ExecutionID)
		switch {
		case err == nil:
			ex, create = stored, false
		case !events.IsNotFound(err):
			e.failMessage(ctx, m, md, ad.ExecutionID, err)
			return
		}
	}
	e.start(ctx, m, md, ex, create)
}

// start runs the first step of an accepted execution and acks its
// submission once that step is durable; with create, that step also
// records the execution unless it is stored already.
func (e *Engine) start(ctx context.Context, m jetstream.Msg, md *jetstream.MsgMetadata, ex *persistence.Execution, create bool) {
	id := ex.ID
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
	if create {
		rec := *ex
		rec.Nodes = nil
		s.upd.Create = &rec
	}
	s.begin()
	if err := e.drive(ctx, s); err != nil {
		e.failMessage(ctx, m, md, id, err)
		return
	}
	_ = m.Ack()
}

// sameCaller checks that a direct submission naming a recorded execution
// comes from its owner, for its workflow.
func (e *Engine) sameCaller(ctx context.Context, m jetstream.Msg, ex *persistence.Execution, req *events.SubmitRequest) error {
	userID, err := e.verify(ctx, Credential(m.Headers()))
	if err != nil {
		return err
	}
	if userID != ex.UserID || (req.WorkflowID != "" && req.WorkflowID != ex.WorkflowID) {
		return events.Errorf(events.CodeConflict, "execution %s exists and is not this submission", ex.ID)
	}
	return nil
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
	checked, problems := g.ValidateInputs(inputs)
	if len(problems) > 0 {
		return nil, events.Invalid(problems)
	}
	raw, ok, _ := events.MarshalValue(checked)
	if !ok {
		if raw, err = json.Marshal(checked); err != nil {
			return nil, err
		}
	}
	return &persistence.Execution{
		ID: id, UserID: w.UserID, WorkflowID: w.ID, WorkflowVersion: w.Version,
		Status: persistence.StatusQueued, Inputs: raw, CreatedAt: at.UTC(),
	}, nil
}

// Credential reads the caller's credential from a message's headers,
// whatever the case of their names.
func Credential(h nats.Header) string {
	if k := headerFold(h, events.HeaderAPIKey); k != "" {
		return strings.TrimSpace(k)
	}
	if a := headerFold(h, events.HeaderAuthorization); a != "" {
		if scheme, tok, ok := strings.Cut(a, " "); ok && strings.EqualFold(scheme, "Bearer") {
			return strings.TrimSpace(tok)
		}
	}
	return ""
}

// headerFold is h.Get with the name compared case-insensitively: NATS
// headers keep the case a client wrote.
func headerFold(h nats.Header, name string) string {
	if v := h.Get(name); v != "" {
		return v
	}
	for k, vs := range h {
		if strings.EqualFold(k, name) && len(vs) > 0 {
			return vs[0]
		}
	}
	return ""
}

// isCredentialHeader reports whether a header carries a secret, which is
// never kept.
func isCredentialHeader(name string) bool {
	return strings.EqualFold(name, events.HeaderAPIKey) || strings.EqualFold(name, events.HeaderAuthorization)
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
// is refused and kept rather than dropped. A recorded execution whose
// message is given up on fails, so it does not hang in running.
func (e *Engine) failMessage(ctx context.Context, m jetstream.Msg, md *jetstream.MsgMetadata, executionID string, err error) {
	var coded *events.Error
	if errors.As(err, &coded) && coded.Code != events.CodeInternal && coded.Code != events.CodeUnavailable {
		switch coded.Code {
		case events.CodeConflict, events.CodeUnauthorized, events.CodeForbidden:
			// The message is refused, not the execution it names: that may
			// be somebody else's.
			e.reject(ctx, m, "", coded)
		default:
			e.reject(ctx, m, executionID, coded)
			e.failExecution(ctx, executionID, coded)
		}
		return
	}
	if md.NumDelivered >= 8 {
		e.log.Error("giving up on a message", "subject", m.Subject(), "execution", executionID, "err", err)
		reason := events.Errorf(events.CodeUnavailable, "could not be processed after %d attempts", md.NumDelivered)
		e.reject(ctx, m, executionID, reason)
		e.failExecution(ctx, executionID, reason)
		return
	}
	e.log.Warn("will retry a message", "subject", m.Subject(), "execution", executionID, "attempt", md.NumDelivered, "err", err)
	_ = m.NakWithDelay(retryDelay(time.Second, int(md.NumDelivered), 0))
}

// failExecution ends a recorded, unfinished execution as failed with
// reason, its unresolved nodes cancelled, and announces the end.
func (e *Engine) failExecution(ctx context.Context, executionID string, reason *events.Error) {
	if executionID == "" {
		return
	}
	ex, err := e.store.LoadExecution(ctx, executionID)
	if err != nil || persistence.Terminal(ex.Status) {
		return
	}
	now := e.cfg.Now().UTC()
	upd := persistence.ExecutionUpdate{ID: ex.ID, Nodes: map[string]*persistence.NodeState{}, Reload: true,
		Finish: &persistence.Finish{Status: persistence.StatusFailed, At: now,
			Error: &persistence.ExecutionError{Code: reason.Code, Message: reason.Message}}}
	g, err := e.graph(ctx, ex.UserID, ex.WorkflowID, ex.WorkflowVersion)
	if err == nil {
		for id, n := range g.Nodes {
			if st := ex.Nodes[id]; st == nil || !persistence.Terminal(st.Status) {
				upd.Nodes[id] = &persistence.NodeState{Type: n.Type, Status: persistence.StatusCancelled}
			}
		}
	}
	res, err := e.store.ApplyExecution(ctx, upd)
	if err != nil || !res.Finished || res.Execution == nil {
		if err != nil {
			e.log.Error("could not fail an execution", "execution", executionID, "err", err)
		}
		return
	}
	if err := e.republishEnd(ctx, res.Execution, g); err != nil {
		e.log.Error("could not announce a failed execution", "execution", executionID, "err", err)
	}
}

// reject refuses a message for good: it is kept in WEFT_REJECTED with its
// reason (credentials removed), a rejected event is published when the
// execution is known, and the message is terminated.
func (e *Engine) reject(ctx context.Context, m jetstream.Msg, executionID string, reason *events.Error) {
	why, _ := json.Marshal(reason)
	keep := nats.NewMsg(events.RejectedSubject(reason.Code))
	keep.Data = m.Data()
	for k, vs := range m.Headers() {
		if isCredentialHeader(k) || strings.EqualFold(k, events.HeaderMsgID) {
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
			// The result too: a caller waiting for the end hears of it there.
			_ = e.nc.Publish(events.ResultSubject(executionID), data)
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

// decodeAdmission decodes a signed submission as strictly as
// decodeStrict, with the faster decoder: what the ingress signed is not
// read by anyone who needs encoding/json's error messages.
func decodeAdmission(data []byte, ad *events.Admission) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(ad); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("unexpected data after the JSON object")
	}
	return nil
}

// decodeStrict decodes one JSON object, refusing unknown fields.
func decodeStrict(data []byte, v any) error {
	dec := stdjson.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return errors.New("the message is not the JSON object expected: " + err.Error())
	}
	if dec.More() {
		return errors.New("unexpected data after the JSON object")
	}
	return nil
}
