package events

import (
	"encoding/json"
	"time"
)

// SubmitRequest asks for an execution, over HTTP or on SubjectSubmit and
// SubjectRun. The caller's credential travels in a header (HeaderAPIKey or
// HeaderAuthorization), never in the body.
type SubmitRequest struct {
	WorkflowID string         `json:"workflowId"`
	Inputs     map[string]any `json:"inputs"`
	// ExecutionID makes a submission idempotent: the same id is the same
	// execution. Optional; derived from the message when absent.
	ExecutionID string `json:"executionId,omitempty"`
}

// Task asks a worker to run one node of one execution. It is kept small:
// everything else is in the store.
type Task struct {
	ExecutionID string `json:"e"`
	NodeID      string `json:"n"`
}

// TaskMsgID is the Nats-Msg-Id of a task, so two schedulers racing to
// publish the same task publish it once.
func TaskMsgID(executionID, nodeID string) string { return executionID + "." + nodeID }

// Event is one transition of one execution, published on
// EventSubject(ExecutionID, Kind).
type Event struct {
	ExecutionID string    `json:"executionId"`
	Kind        string    `json:"kind"`
	UserID      string    `json:"userId"`
	WorkflowID  string    `json:"workflowId"`
	At          time.Time `json:"at"`
	// Nodes lists the node transitions this event reports: every node
	// resolved in the step that published it.
	Nodes []NodeEvent `json:"nodes,omitempty"`
	// DurationMs is the execution's duration, on terminal events.
	DurationMs float64 `json:"durationMs,omitempty"`
	// Execution is the whole execution as the API serves it, on terminal
	// events, so a waiter answers without reading the store.
	Execution json.RawMessage `json:"execution,omitempty"`
	// Error is the reason, on failed and rejected events.
	Error *Error `json:"error,omitempty"`
}

// NodeEvent is one node's transition.
type NodeEvent struct {
	ID         string  `json:"id"`
	Type       string  `json:"type"`
	Status     string  `json:"status"`
	Attempts   int     `json:"attempts,omitempty"`
	DurationMs float64 `json:"durationMs,omitempty"`
}

// MarshalJSON writes an Error as {"code","message","details"}.
func (e *Error) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Code    string       `json:"code"`
		Message string       `json:"message"`
		Details []FieldError `json:"details,omitempty"`
	}{e.Code, e.Message, e.Details})
}

// UnmarshalJSON reads what MarshalJSON writes.
func (e *Error) UnmarshalJSON(b []byte) error {
	var v struct {
		Code    string       `json:"code"`
		Message string       `json:"message"`
		Details []FieldError `json:"details"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	e.Code, e.Message, e.Details = v.Code, v.Message, v.Details
	return nil
}

// Token is a piece of an AI node's text, published as it arrives.
type Token struct {
	ExecutionID string `json:"executionId"`
	NodeID      string `json:"nodeId"`
	Text        string `json:"text"`
}
