package workers

import (
	"slices"
	"strconv"
	"time"

	"github.com/weftdev/weft/events"
)

// AppendJSON appends the view as JSON to b: the bytes the engine's
// encoder (goccy/go-json, like encoding/json but for the exponent of very
// small durations) makes of it, map keys sorted and HTML characters
// escaped, without the encoder's work on the raw values.
// An encoder parses and compacts each json.RawMessage to check it, and
// formats every time through MarshalJSON; a view is encoded once per
// execution that ends, and its raw values (inputs, outputs) are most of
// its bytes. The raw values are taken as they are: they are the store's,
// written compact by the engine's encoder (the encoder would compact them,
// and refuse one that is not JSON). Node ids sort the same raw as encoded,
// as flow allows them (letters, digits, '_'); the encoder sorts keys by
// their encoding. A time outside the years 0 to 9999, a NaN or an
// infinity, which JSON cannot hold, is an error, as for the encoder.
func (v ExecutionView) AppendJSON(b []byte) ([]byte, error) {
	var err error
	b = append(b, `{"id":`...)
	b = events.AppendString(b, v.ID)
	b = append(b, `,"workflowId":`...)
	b = events.AppendString(b, v.WorkflowID)
	b = append(b, `,"workflowVersion":`...)
	b = strconv.AppendInt(b, int64(v.WorkflowVersion), 10)
	b = append(b, `,"status":`...)
	b = events.AppendString(b, v.Status)
	b = append(b, `,"inputs":`...)
	b = appendRaw(b, v.Inputs)
	b = append(b, `,"output":`...)
	b = appendRaw(b, v.Output)
	b = append(b, `,"error":`...)
	if e := v.Error; e != nil {
		b = append(b, `{"nodeId":`...)
		b = events.AppendString(b, e.NodeID)
		b = appendCodeMessage(append(b, ','), e.Code, e.Message)
		b = append(b, '}')
	} else {
		b = append(b, "null"...)
	}
	if len(v.Nodes) > 0 {
		b = append(b, `,"nodes":{`...)
		ids := make([]string, 0, len(v.Nodes))
		for id := range v.Nodes {
			ids = append(ids, id)
		}
		slices.Sort(ids)
		for i, id := range ids {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(events.AppendString(b, id), ':')
			n := v.Nodes[id]
			if b, err = n.appendJSON(b); err != nil {
				return nil, err
			}
		}
		b = append(b, '}')
	}
	b = append(b, `,"createdAt":`...)
	if b, err = events.AppendTime(b, v.CreatedAt); err != nil {
		return nil, err
	}
	b = append(b, `,"startedAt":`...)
	if b, err = appendTimeOrNull(b, v.StartedAt); err != nil {
		return nil, err
	}
	b = append(b, `,"finishedAt":`...)
	if b, err = appendTimeOrNull(b, v.FinishedAt); err != nil {
		return nil, err
	}
	b = append(b, `,"durationMs":`...)
	if v.DurationMs != nil {
		if b, err = events.AppendFloat(b, *v.DurationMs); err != nil {
			return nil, err
		}
	} else {
		b = append(b, "null"...)
	}
	return append(b, '}'), nil
}

func (n *NodeView) appendJSON(b []byte) ([]byte, error) {
	var err error
	b = append(b, `{"type":`...)
	b = events.AppendString(b, n.Type)
	b = append(b, `,"status":`...)
	b = events.AppendString(b, n.Status)
	if n.Attempts != 0 {
		b = append(b, `,"attempts":`...)
		b = strconv.AppendInt(b, int64(n.Attempts), 10)
	}
	if n.StartedAt != nil {
		b = append(b, `,"startedAt":`...)
		if b, err = events.AppendTime(b, *n.StartedAt); err != nil {
			return nil, err
		}
	}
	if n.FinishedAt != nil {
		b = append(b, `,"finishedAt":`...)
		if b, err = events.AppendTime(b, *n.FinishedAt); err != nil {
			return nil, err
		}
	}
	if n.DurationMs != nil {
		b = append(b, `,"durationMs":`...)
		if b, err = events.AppendFloat(b, *n.DurationMs); err != nil {
			return nil, err
		}
	}
	if len(n.Output) > 0 {
		b = append(b, `,"output":`...)
		b = append(b, n.Output...)
	}
	b = append(b, `,"error":`...)
	if e := n.Error; e != nil {
		b = append(appendCodeMessage(append(b, '{'), e.Code, e.Message), '}')
	} else {
		b = append(b, "null"...)
	}
	return append(b, '}'), nil
}

// appendCodeMessage appends the members of a persistence.NodeError or
// the last two of a persistence.ExecutionError.
func appendCodeMessage(b []byte, code, message string) []byte {
	b = append(b, `"code":`...)
	b = events.AppendString(b, code)
	b = append(b, `,"message":`...)
	return events.AppendString(b, message)
}

// appendRaw appends a raw value, null when it is empty.
func appendRaw(b, raw []byte) []byte {
	if len(raw) == 0 {
		return append(b, "null"...)
	}
	return append(b, raw...)
}

func appendTimeOrNull(b []byte, t *time.Time) ([]byte, error) {
	if t == nil {
		return append(b, "null"...), nil
	}
	return events.AppendTime(b, *t)
}
