package projector

import (
	"bytes"
	"time"

	json "github.com/goccy/go-json"

	"github.com/weftdev/weft/events"
)

// wireEvent is the part of events.Event the projector reads.
type wireEvent struct {
	ExecutionID string             `json:"executionId"`
	Kind        string             `json:"kind"`
	UserID      string             `json:"userId"`
	WorkflowID  string             `json:"workflowId"`
	At          time.Time          `json:"at"`
	Nodes       []events.NodeEvent `json:"nodes"`
	DurationMs  float64            `json:"durationMs"`
}

// decodeEvent reads the fields the projector counts. A terminal event
// carries the whole execution (outputs included, often kilobytes) that the
// projector never reads; encoding/json would still scan and validate it
// at some 100 MB/s, several times the cost of the rest of the projector's
// work, so it is cut out first with a plain byte scan.
func decodeEvent(data []byte, ev *wireEvent) error {
	return json.Unmarshal(trimExecution(data), ev)
}

var executionKey = []byte(`,"execution":`)

// trimExecution removes the `,"execution":<value>` member. The match is
// always structural: inside a JSON string a '"' is escaped, so it never
// follows a ',' directly. Wherever it is (top level, as published, or in
// some nested object) the projector reads nothing there, and removing a
// member leaves valid JSON valid. Anything unexpected returns the input
// whole, for encoding/json to judge.
func trimExecution(data []byte) []byte {
	i := bytes.Index(data, executionKey)
	if i < 0 {
		return data
	}
	j := skipValue(data, i+len(executionKey))
	if j < 0 {
		return data
	}
	out := make([]byte, 0, i+len(data)-j)
	out = append(out, data[:i]...)
	return append(out, data[j:]...)
}

// skipValue returns the index just past the JSON value starting at i
// (after optional whitespace), or -1 if the data ends first. It does not
// validate: encoding/json does that on what is left.
func skipValue(b []byte, i int) int {
	depth := 0
	for ; i < len(b); i++ {
		switch b[i] {
		case '"':
			for i++; i < len(b) && b[i] != '"'; i++ {
				if b[i] == '\\' {
					i++
				}
			}
			if i >= len(b) {
				return -1
			}
			if depth == 0 {
				return i + 1
			}
		case '{', '[':
			depth++
		case '}', ']':
			if depth == 0 {
				return i // a scalar ended by its object's end
			}
			if depth--; depth == 0 {
				return i + 1
			}
		case ',':
			if depth == 0 {
				return i // a scalar ended by the next member
			}
		}
	}
	return -1
}
