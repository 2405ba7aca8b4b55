package ingress

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/gofiber/fiber/v2"

	"github.com/weftdev/weft/events"
)

// errorBody is the contract's error shape.
type errorBody struct {
	Error errorPayload `json:"error"`
}

type errorPayload struct {
	Code    string              `json:"code"`
	Message string              `json:"message"`
	Details []events.FieldError `json:"details"`
}

var statusByCode = map[string]int{
	events.CodeInvalid:      http.StatusBadRequest,
	events.CodeUnauthorized: http.StatusUnauthorized,
	events.CodeForbidden:    http.StatusForbidden,
	events.CodeNotFound:     http.StatusNotFound,
	events.CodeConflict:     http.StatusConflict,
	events.CodeTooLarge:     http.StatusRequestEntityTooLarge,
	events.CodeUnsupported:  http.StatusUnsupportedMediaType,
	events.CodeRateLimited:  http.StatusTooManyRequests,
	events.CodeUnavailable:  http.StatusServiceUnavailable,
}

// codeByStatus names the errors Fiber itself raises (unknown route, body too
// large, wrong method) in the contract's vocabulary.
var codeByStatus = map[int]string{
	http.StatusBadRequest:            events.CodeInvalid,
	http.StatusNotFound:              events.CodeNotFound,
	http.StatusMethodNotAllowed:      "method_not_allowed",
	http.StatusRequestEntityTooLarge: events.CodeTooLarge,
	http.StatusUnsupportedMediaType:  events.CodeUnsupported,
	http.StatusTooManyRequests:       events.CodeRateLimited,
	http.StatusRequestTimeout:        "timeout",
}

// errorHandler turns any error a handler returns into the contract's shape.
// Only internal errors are logged, and their text never reaches the client.
func errorHandler(log *slog.Logger) fiber.ErrorHandler {
	return func(c *fiber.Ctx, err error) error {
		var (
			e  *events.Error
			fe *fiber.Error
		)
		status := http.StatusInternalServerError
		body := errorPayload{Code: events.CodeInternal, Message: "internal error"}
		switch {
		case errors.As(err, &e) && e.Code != events.CodeInternal:
			status = statusByCode[e.Code]
			if status == 0 {
				status = http.StatusBadRequest
			}
			body = errorPayload{Code: e.Code, Message: e.Message, Details: e.Details}
		case errors.As(err, &fe):
			status = fe.Code
			code := codeByStatus[fe.Code]
			if code == "" {
				code = strings.ReplaceAll(strings.ToLower(http.StatusText(fe.Code)), " ", "_")
			}
			body = errorPayload{Code: code, Message: fe.Message}
			if status >= 500 {
				log.Error("request failed", "method", c.Method(), "path", c.Path(), "err", err)
				body.Message = "internal error"
			}
		default:
			log.Error("request failed", "method", c.Method(), "path", c.Path(), "err", err)
		}
		if body.Details == nil {
			body.Details = []events.FieldError{}
		}
		if status == http.StatusTooManyRequests && c.GetRespHeader(fiber.HeaderRetryAfter) == "" {
			c.Set(fiber.HeaderRetryAfter, "1")
		}
		return c.Status(status).JSON(errorBody{Error: body})
	}
}

// decodeJSON decodes a request body into v, strictly: unknown fields, wrong
// types, trailing data and malformed JSON are validation errors naming the
// path of the problem.
func decodeJSON(body []byte, v any) error {
	if len(bytes.TrimSpace(body)) == 0 {
		return events.Invalid([]events.FieldError{{Path: "", Message: "a JSON body is required"}})
	}
	if err := checkUTF8(body); err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return events.Invalid([]events.FieldError{jsonProblem(err)})
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return events.Invalid([]events.FieldError{{Path: "", Message: "unexpected data after the JSON value"}})
	}
	return nil
}

// checkUTF8 refuses a body with bytes that are not UTF-8, naming the path
// of the string that holds them: the decoder would replace them with
// U+FFFD, so two different byte strings would read as one (two passwords
// that log in as each other).
func checkUTF8(body []byte) error {
	if utf8.Valid(body) {
		return nil
	}
	return events.Invalid([]events.FieldError{{Path: utf8Path(body, firstInvalidUTF8(body)), Message: "is not valid UTF-8"}})
}

// firstInvalidUTF8 is the offset of the first byte of b that is not UTF-8,
// or len(b).
func firstInvalidUTF8(b []byte) int {
	i := 0
	for i < len(b) {
		r, size := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && size <= 1 {
			break
		}
		i += size
	}
	return i
}

// utf8Path is the JSON path of the token of body that holds byte offset
// bad: the key itself when the bad bytes are in a key; "" when the body
// does not decode that far.
func utf8Path(body []byte, bad int) string {
	type frame struct {
		object, wantKey bool
		key             string
		index           int
	}
	var stack []*frame
	path := func(key *string) string {
		p := ""
		for i, f := range stack {
			switch {
			case !f.object:
				p = fmt.Sprintf("%s[%d]", p, f.index)
			case i == len(stack)-1 && key != nil:
				p = joinPath(p, *key)
			case !f.wantKey:
				p = joinPath(p, f.key)
			}
		}
		return p
	}
	// valueDone moves the innermost container past the value just read.
	valueDone := func() {
		if len(stack) == 0 {
			return
		}
		if f := stack[len(stack)-1]; f.object {
			f.wantKey = true
		} else {
			f.index++
		}
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	for {
		tok, err := dec.Token()
		if err != nil {
			return ""
		}
		top := (*frame)(nil)
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		isKey := top != nil && top.object && top.wantKey
		if dec.InputOffset() > int64(bad) {
			if k, ok := tok.(string); ok && isKey {
				return path(&k)
			}
			return path(nil)
		}
		switch t := tok.(type) {
		case json.Delim:
			switch t {
			case '{':
				stack = append(stack, &frame{object: true, wantKey: true})
			case '[':
				stack = append(stack, &frame{})
			default:
				stack = stack[:len(stack)-1]
				valueDone()
			}
		case string:
			if isKey {
				top.key, top.wantKey = t, false
				continue
			}
			valueDone()
		default:
			valueDone()
		}
	}
}

func joinPath(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// jsonProblem describes a decoding error with the path it happened at.
func jsonProblem(err error) events.FieldError {
	var (
		syn *json.SyntaxError
		typ *json.UnmarshalTypeError
	)
	switch {
	case errors.As(err, &syn):
		return events.FieldError{Path: "", Message: fmt.Sprintf("malformed JSON at byte %d: %s", syn.Offset, syn.Error())}
	case errors.As(err, &typ):
		if typ.Field == "" {
			return events.FieldError{Path: "", Message: "the body must be a JSON " + typeName(typ.Type.Kind().String())}
		}
		return events.FieldError{Path: typ.Field, Message: fmt.Sprintf("must be a %s, not %s", typeName(typ.Type.Kind().String()), typ.Value)}
	case errors.Is(err, io.ErrUnexpectedEOF):
		return events.FieldError{Path: "", Message: "malformed JSON: unexpected end of input"}
	}
	msg := err.Error()
	if field, ok := strings.CutPrefix(msg, "json: unknown field "); ok {
		f, _ := strconv.Unquote(field)
		return events.FieldError{Path: f, Message: "unknown field"}
	}
	return events.FieldError{Path: "", Message: "malformed JSON: " + msg}
}

func typeName(kind string) string {
	switch kind {
	case "struct", "map":
		return "object"
	case "slice", "array":
		return "array"
	case "int", "int64", "float64", "int32", "uint", "uint64":
		return "number"
	case "bool":
		return "boolean"
	}
	return kind
}
