package workers

import (
	"errors"
	"math"
	"slices"
	"strconv"
	"time"
	"unicode/utf8"
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
	b = appendString(b, v.ID)
	b = append(b, `,"workflowId":`...)
	b = appendString(b, v.WorkflowID)
	b = append(b, `,"workflowVersion":`...)
	b = strconv.AppendInt(b, int64(v.WorkflowVersion), 10)
	b = append(b, `,"status":`...)
	b = appendString(b, v.Status)
	b = append(b, `,"inputs":`...)
	b = appendRaw(b, v.Inputs)
	b = append(b, `,"output":`...)
	b = appendRaw(b, v.Output)
	b = append(b, `,"error":`...)
	if e := v.Error; e != nil {
		b = append(b, `{"nodeId":`...)
		b = appendString(b, e.NodeID)
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
			b = append(appendString(b, id), ':')
			n := v.Nodes[id]
			if b, err = n.appendJSON(b); err != nil {
				return nil, err
			}
		}
		b = append(b, '}')
	}
	b = append(b, `,"createdAt":`...)
	if b, err = appendTime(b, v.CreatedAt); err != nil {
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
		if b, err = appendFloat(b, *v.DurationMs); err != nil {
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
	b = appendString(b, n.Type)
	b = append(b, `,"status":`...)
	b = appendString(b, n.Status)
	if n.Attempts != 0 {
		b = append(b, `,"attempts":`...)
		b = strconv.AppendInt(b, int64(n.Attempts), 10)
	}
	if n.StartedAt != nil {
		b = append(b, `,"startedAt":`...)
		if b, err = appendTime(b, *n.StartedAt); err != nil {
			return nil, err
		}
	}
	if n.FinishedAt != nil {
		b = append(b, `,"finishedAt":`...)
		if b, err = appendTime(b, *n.FinishedAt); err != nil {
			return nil, err
		}
	}
	if n.DurationMs != nil {
		b = append(b, `,"durationMs":`...)
		if b, err = appendFloat(b, *n.DurationMs); err != nil {
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
	b = appendString(b, code)
	b = append(b, `,"message":`...)
	return appendString(b, message)
}

// appendRaw appends a raw value, null when it is empty.
func appendRaw(b, raw []byte) []byte {
	if len(raw) == 0 {
		return append(b, "null"...)
	}
	return append(b, raw...)
}

var errTimeRange = errors.New("a time outside the years 0 to 9999 cannot be encoded")

// appendTime appends t as time.Time.MarshalJSON does.
func appendTime(b []byte, t time.Time) ([]byte, error) {
	if y := t.Year(); y < 0 || y > 9999 {
		return nil, errTimeRange
	}
	b = append(b, '"')
	b = t.AppendFormat(b, time.RFC3339Nano)
	return append(b, '"'), nil
}

func appendTimeOrNull(b []byte, t *time.Time) ([]byte, error) {
	if t == nil {
		return append(b, "null"...), nil
	}
	return appendTime(b, *t)
}

// appendFloat appends f as the engine's encoder does: the shortest
// decimal that reads back as f, in exponent form only for very small or
// large values (2.5e-09, where encoding/json writes 2.5e-9). NaN and
// infinities, which JSON cannot hold, are an error, as for the encoder.
func appendFloat(b []byte, f float64) ([]byte, error) {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return nil, errBadFloat
	}
	format := byte('f')
	if abs := math.Abs(f); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	return strconv.AppendFloat(b, f, format, -1, 64), nil
}

var errBadFloat = errors.New("NaN or an infinity cannot be encoded")

const hexDigits = "0123456789abcdef"

// appendString appends s as a JSON string as the engine's encoder does:
// HTML characters, control characters (\u0008 and \u000c where
// encoding/json writes \b and \f), U+2028 and U+2029 escaped, and invalid
// UTF-8 replaced by U+FFFD.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
