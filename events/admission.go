package events

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"hash"
	"sync"
	"sync/atomic"
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
	var sum [sha256.Size]byte
	return base64.RawURLEncoding.EncodeToString(admissionMAC(key, body, sum[:0]))
}

// VerifyAdmission reports whether sig is key's signature of body, in
// constant time.
func VerifyAdmission(key, body []byte, sig string) bool {
	if len(key) == 0 {
		return false
	}
	// Strictly: one spelling per signature, and every character decoded
	// (a lax decoder skips line breaks, which would leave bytes unset).
	var got, want [sha256.Size]byte
	if base64.RawURLEncoding.DecodedLen(len(sig)) != len(got) {
		return false
	}
	n, err := base64.RawURLEncoding.Strict().Decode(got[:], []byte(sig))
	if err != nil || n != len(got) {
		return false
	}
	return hmac.Equal(got[:], admissionMAC(key, body, want[:0]))
}

// macs are HMACs keyed with the last key used, reset and used again: a
// process signs or checks every execution with the one key of its
// deployment, and keying an HMAC anew costs two hash blocks and some
// allocations each time.
type macs struct {
	key  string
	pool sync.Pool
}

var lastMACs atomic.Pointer[macs]

// admissionMAC appends key's HMAC-SHA256 of body to out.
func admissionMAC(key, body, out []byte) []byte {
	p := lastMACs.Load()
	if p == nil || p.key != string(key) {
		p = &macs{key: string(key)}
		k := p.key
		p.pool.New = func() any { return hmac.New(sha256.New, []byte(k)) }
		lastMACs.Store(p)
	}
	m := p.pool.Get().(hash.Hash)
	m.Reset()
	m.Write(body)
	out = m.Sum(out)
	p.pool.Put(m)
	return out
}
