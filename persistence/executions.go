package persistence

import (
	"context"
	"encoding/json"
	"time"
)

// Execution statuses.
const (
	StatusQueued    = "queued"
	StatusRunning   = "running"
	StatusCompleted = "completed"
	StatusFailed    = "failed"
	StatusCancelled = "cancelled"
)

// Node statuses beyond the ones executions share.
const (
	NodePending = "pending"
	NodeSkipped = "skipped"
)

// Terminal reports whether an execution or node status is final.
func Terminal(status string) bool {
	switch status {
	case StatusCompleted, StatusFailed, StatusCancelled, NodeSkipped:
		return true
	}
	return false
}

// Execution is one run of one workflow version.
type Execution struct {
	ID              string
	UserID          string
	WorkflowID      string
	WorkflowVersion int
	Status          string
	Inputs          json.RawMessage // a JSON object
	Output          json.RawMessage // nil until completed
	Error           *ExecutionError // set when failed
	IdempotencyKey  string          // "" when none; unique per user otherwise
	CreatedAt       time.Time
	StartedAt       *time.Time
	FinishedAt      *time.Time
	// Nodes holds the state of every node that has one, by node id. A node
	// absent from the map is pending.
	Nodes map[string]*NodeState
}

// ExecutionError says why an execution failed.
type ExecutionError struct {
	NodeID  string `json:"nodeId"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

// NodeState is what is known of one node of one execution.
type NodeState struct {
	Type       string
	Status     string
	Attempts   int
	StartedAt  *time.Time
	FinishedAt *time.Time
	Output     json.RawMessage
	Error      *NodeError
}

// NodeError says why a node failed.
type NodeError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// NodeLog is one line a node wrote while it ran.
type NodeLog struct {
	NodeID  string
	At      time.Time
	Level   string // debug, info, warn, error
	Message string
}

// ExecutionFilter narrows a listing; empty fields match everything.
type ExecutionFilter struct {
	WorkflowID string
	Status     string
}

// ExecutionUpdate is every write of one engine step, applied together (one
// transaction where the store has them, in a safe order where it does not).
// Each part is idempotent, so an update applied twice (a redelivered task)
// changes nothing the second time.
type ExecutionUpdate struct {
	ID string
	// Create, when set, is the execution as first recorded (queued, ID
	// its id), inserted before the rest unless it is stored already: the
	// starter of a signed submission may get there before the ingress's
	// own write of it.
	Create *Execution
	// Start moves a queued execution to running with this start time. It
	// does nothing to an execution that is already running or terminal.
	Start *time.Time
	// Nodes writes node states. A node whose stored state is terminal is
	// never changed: the first terminal write wins. A non-terminal write
	// (running, with its attempt count) replaces a non-terminal one.
	Nodes map[string]*NodeState
	// Finish makes the execution terminal, unless it already is.
	Finish *Finish
	// Logs are appended.
	Logs []NodeLog
	// Reload asks for the execution as it stands after the update.
	Reload bool
}

// Finish is how an execution ended.
type Finish struct {
	Status string // completed, failed or cancelled
	Output json.RawMessage
	Error  *ExecutionError
	At     time.Time
}

// ApplyResult is what an update did.
type ApplyResult struct {
	// Finished is true when this update made the execution terminal, so
	// exactly one of two racing finishers (say, completion and cancel)
	// learns that it won.
	Finished bool
	// Ended is true when the execution was terminal before this update:
	// the update wrote nothing (an ended execution's record is final), and
	// its caller must announce and schedule nothing.
	Ended bool
	// Execution is the state after the update, when Reload was set.
	Execution *Execution
}

// Executions keeps executions, their node states and logs.
type Executions interface {
	// CreateExecution stores e unless an execution with its ID, or with its
	// user's IdempotencyKey, exists already; then it returns that one and
	// created is false. Either way the stored execution is returned.
	CreateExecution(ctx context.Context, e *Execution) (stored *Execution, created bool, err error)
	// GetExecution returns one of the user's executions with its nodes.
	GetExecution(ctx context.Context, userID, id string) (*Execution, error)
	// LoadExecution returns an execution by id alone, for the engine.
	LoadExecution(ctx context.Context, id string) (*Execution, error)
	// ListExecutions lists the user's executions, newest first (by ID),
	// without their nodes.
	ListExecutions(ctx context.Context, userID string, f ExecutionFilter, p Page) ([]Execution, string, error)
	// ApplyExecution applies one engine step to an existing execution.
	ApplyExecution(ctx context.Context, u ExecutionUpdate) (ApplyResult, error)
	// UnfinishedExecutions lists executions still queued or running that
	// were created before the given time, oldest first, without nodes: the
	// reconciler's work list.
	UnfinishedExecutions(ctx context.Context, before time.Time, limit int) ([]Execution, error)
	// ExecutionLogs returns the logs of one of the user's executions, oldest
	// first, at most limit lines.
	ExecutionLogs(ctx context.Context, userID, id string, limit int) ([]NodeLog, error)
}
