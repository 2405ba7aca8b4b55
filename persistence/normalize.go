package persistence

import (
	"encoding/json"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/weftdev/weft/events"
)

// Millis is *t at the precision every store keeps (milliseconds), in UTC,
// so a record reads back the same from either adapter.
func Millis(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	c := t.UTC().Truncate(time.Millisecond)
	return &c
}

// ValidNode checks a node state a caller asks a store to write. Its id
// must be valid UTF-8: a store that keeps nodes in one JSON document would
// otherwise make two ids one.
func ValidNode(id string, n *NodeState) error {
	if id == "" || n == nil || n.Status == "" {
		return events.Errorf(events.CodeInvalid, "node %q needs a status", id)
	}
	if !utf8.ValidString(id) {
		return events.Errorf(events.CodeInvalid, "node id %q is not valid UTF-8", id)
	}
	return nil
}

// NormalizeExecution is a copy of e as a store keeps it: defaults filled
// in (status queued, inputs {}), created as its creation time, and every
// time at millisecond precision in UTC.
func NormalizeExecution(e *Execution, created time.Time) (*Execution, error) {
	if e.ID == "" || e.UserID == "" {
		return nil, events.Errorf(events.CodeInvalid, "an execution needs an id and a user")
	}
	if strings.Contains(e.ID, ":") {
		// The mongo store builds node keys as "<executionId>:<nodeId>".
		return nil, events.Errorf(events.CodeInvalid, "an execution id cannot contain ':'")
	}
	ne := *e
	if ne.Status == "" {
		ne.Status = StatusQueued
	}
	if len(ne.Inputs) == 0 {
		ne.Inputs = json.RawMessage(`{}`)
	}
	ne.CreatedAt = created
	ne.StartedAt, ne.FinishedAt = Millis(e.StartedAt), Millis(e.FinishedAt)
	ne.Nodes = make(map[string]*NodeState, len(e.Nodes))
	for id, n := range e.Nodes {
		if err := ValidNode(id, n); err != nil {
			return nil, err
		}
		c := *n
		c.StartedAt, c.FinishedAt = Millis(n.StartedAt), Millis(n.FinishedAt)
		ne.Nodes[id] = &c
	}
	return &ne, nil
}

// PageLimit applies the listing bounds every store shares: 20 when the
// page names none, at most 100, at least 1.
func PageLimit(n int) int {
	switch {
	case n == 0:
		return 20
	case n < 1:
		return 1
	case n > 100:
		return 100
	}
	return n
}

// WorkLimit bounds the engine's work lists and log reads: 100 when none
// is named, at most 1000.
func WorkLimit(n int) int {
	switch {
	case n <= 0:
		return 100
	case n > 1000:
		return 1000
	}
	return n
}
