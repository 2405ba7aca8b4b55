package events

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"time"
)

// Admission is the submission the ingress publishes for an execution it
// has authenticated, checked and recorded: the record itself, signed with
// a key every process of a deployment derives from the shared secret
// (SubmissionKey). The starter runs a first delivery of a valid one
// without reading the store, which spares it a read per execution; a
// redelivery, or an unsigned submission, is checked against the store as
// before. A signature proves the ingress wrote the body; no credential
// travels with it (secrets are never kept in a stream).
type Admission struct {
	ExecutionID     string          `json:"executionId"`
	WorkflowID      string          `json:"workflowId"`
	WorkflowVersion int             `json:"workflowVersion"`
	UserID          string          `json:"userId"`
	CreatedAt       time.Time       `json:"createdAt"`
	Inputs          json.RawMessage `json:"inputs"`
}

// MaxAdmissionInputs is the largest inputs an Admission carries; the
// ingress submits an execution with larger ones unsigned, and the
// starter reads them from the store, so no message nears the server's
// payload limit.
const MaxAdmissionInputs = 64 << 10

// SubmissionKey derives the admission signing key from the deployment's
// shared secret, so the JWT key itself signs nothing else.
func SubmissionKey(secret []byte) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte("weft admission v1"))
	return m.Sum(nil)
}

// SignAdmission returns the HeaderSignature value for body.
func SignAdmission(key, body []byte) string {
	m := hmac.New(sha256.New, key)
	m.Write(body)
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// VerifyAdmission reports whether sig is key's signature of body, in
// constant time.
func VerifyAdmission(key, body []byte, sig string) bool {
	if len(key) == 0 {
		return false
	}
	got, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil {
		return false
	}
	m := hmac.New(sha256.New, key)
	m.Write(body)
	return hmac.Equal(got, m.Sum(nil))
}
