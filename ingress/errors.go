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
