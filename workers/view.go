package workers

import (
	"encoding/json"
	"time"

	"github.com/weftdev/weft/persistence"
)

// ExecutionView is an execution as the API serves it (the contract's
// shape). Terminal events carry it, so waiters answer without a read.
type ExecutionView struct {
	ID              string                      `json:"id"`
	WorkflowID      string                      `json:"workflowId"`
	WorkflowVersion int                         `json:"workflowVersion"`
	Status          string                      `json:"status"`
	Inputs          json.RawMessage             `json:"inputs"`
	Output          json.RawMessage             `json:"output"`
	Error           *persistence.ExecutionError `json:"error"`
	Nodes           map[string]NodeView         `json:"nodes,omitempty"`
	CreatedAt       time.Time                   `json:"createdAt"`
	StartedAt       *time.Time                  `json:"startedAt"`
	FinishedAt      *time.Time                  `json:"finishedAt"`
	DurationMs      *float64                    `json:"durationMs"`
}

// NodeView is one node of an execution as the API serves it.
type NodeView struct {
	Type       string                 `json:"type"`
	Status     string                 `json:"status"`
	Attempts   int                    `json:"attempts,omitempty"`
	StartedAt  *time.Time             `json:"startedAt,omitempty"`
	FinishedAt *time.Time             `json:"finishedAt,omitempty"`
	DurationMs *float64               `json:"durationMs,omitempty"`
	Output     json.RawMessage        `json:"output,omitempty"`
	Error      *persistence.NodeError `json:"error"`
}

var jsonNull = json.RawMessage("null")

// View turns a stored execution into its API shape. types gives the type of
// nodes that have no state yet (pending); nil lists only nodes with state.
func View(e *persistence.Execution, types map[string]string) ExecutionView {
	v := ExecutionView{
		ID: e.ID, WorkflowID: e.WorkflowID, WorkflowVersion: e.WorkflowVersion, Status: e.Status,
		Inputs: orNull(e.Inputs), Output: orNull(e.Output), Error: e.Error,
		CreatedAt: e.CreatedAt, StartedAt: e.StartedAt, FinishedAt: e.FinishedAt,
		DurationMs: durationMs(e.StartedAt, e.FinishedAt),
	}
	if len(e.Inputs) == 0 {
		v.Inputs = json.RawMessage("{}")
	}
	if e.Nodes != nil || types != nil {
		v.Nodes = make(map[string]NodeView, max(len(e.Nodes), len(types)))
		for id, t := range types {
			v.Nodes[id] = NodeView{Type: t, Status: persistence.NodePending}
		}
		for id, n := range e.Nodes {
			nv := NodeView{
				Type: n.Type, Status: n.Status, Attempts: n.Attempts, StartedAt: n.StartedAt,
				FinishedAt: n.FinishedAt, DurationMs: durationMs(n.StartedAt, n.FinishedAt), Output: n.Output, Error: n.Error,
			}
			if n.Status == persistence.StatusCompleted && len(nv.Output) == 0 {
				nv.Output = jsonNull
			}
			v.Nodes[id] = nv
		}
	}
	return v
}

func orNull(raw json.RawMessage) json.RawMessage {
	if len(raw) == 0 {
		return jsonNull
	}
	return raw
}

func durationMs(from, to *time.Time) *float64 {
	if from == nil || to == nil {
		return nil
	}
	d := float64(to.Sub(*from).Microseconds()) / 1000
	return &d
}
