package events

import (
	"errors"
	"fmt"
)

// Error codes shared by every layer. The ingress maps them to HTTP statuses;
// nothing below the ingress knows about HTTP.
const (
	CodeInvalid      = "validation_failed"
	CodeUnauthorized = "unauthorized"
	CodeForbidden    = "forbidden"
	CodeNotFound     = "not_found"
	CodeConflict     = "conflict"
	CodeTooLarge     = "payload_too_large"
	CodeUnsupported  = "unsupported_media_type"
	CodeRateLimited  = "rate_limited"
	CodeUnavailable  = "unavailable"
	CodeInternal     = "internal"
)

// FieldError names one problem with one field of a request, by its JSON path
// (for example "nodes[3].config.url").
type FieldError struct {
	Path    string `json:"path"`
	Message string `json:"message"`
}

// Error is the one coded error type of Weft. Message is safe to show to the
// caller; internal causes are wrapped in Err and never shown.
type Error struct {
	Code    string
	Message string
	Details []FieldError
	Err     error
}

func (e *Error) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%s: %s: %v", e.Code, e.Message, e.Err)
	}
	return e.Code + ": " + e.Message
}

func (e *Error) Unwrap() error { return e.Err }

// Errorf builds a coded error with a formatted message.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// Invalid builds a validation error carrying every field problem found.
func Invalid(details []FieldError) *Error {
	return &Error{Code: CodeInvalid, Message: "the request is not valid", Details: details}
}

// ErrorCode returns the code of err, CodeInternal for an uncoded error and ""
// for nil.
func ErrorCode(err error) string {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return CodeInternal
}

// IsNotFound reports whether err carries CodeNotFound.
func IsNotFound(err error) bool { return ErrorCode(err) == CodeNotFound }

// IsConflict reports whether err carries CodeConflict.
func IsConflict(err error) bool { return ErrorCode(err) == CodeConflict }
