package persistence

import (
	"context"
	"encoding/json"
	"time"
)

// The per-user data space behind the DATABASE node: documents in named
// collections, owned by one user each. Both adapters implement DataStore
// with the same semantics, checked by the conformance suite:
//
//   - Documents are JSON objects. Numbers are IEEE-754 doubles (as in
//     JavaScript and JSON); integers beyond 2^53 lose precision. Field names
//     must be non-empty and must not start with "$" nor hold ".", '"' or
//     '\'. Arrays of arrays are refused (FerretDB v1 cannot store them).
//   - Every document has a string _id. A document without one gets an id
//     derived from the request's idempotency key and its index, so a
//     redelivered insert names the same documents (a random one when there
//     is no key).
//   - A path is a dotted list of field names ("address.city"); a segment
//     made only of digits (an array index in MongoDB) is refused. In a
//     filter, a segment that meets an array looks into each of its objects
//     (as MongoDB does), and a condition on a field holding an array holds
//     when it holds for the array itself or for one of its elements.
//   - Comparisons never cross types, as MongoDB's type bracketing: a number
//     never equals a string, and $gt/$gte/$lt/$lte between different types
//     match nothing. Their operand must be a number, a string or a boolean
//     (false < true); strings compare by their UTF-8 bytes.
//   - {"f": null} (and $in holding null) matches a null value and a missing
//     field alike; $ne, $nin and $not match exactly the documents the
//     positive condition does not, missing fields included. Through an
//     array, {"a.b": null} matches when some b is null or no object of a
//     has a b (MongoDB also matches when just one object lacks it; FerretDB
//     and the embedded store do not).
//   - An object compared by equality matches the value itself or an element
//     of an array value, on every adapter (FerretDB v1 would compare only
//     the whole value; the mongo adapter spells the element case out).
//   - Objects are equal when they have the same fields in the same key order;
//     stored objects keep their keys sorted, so equality is by content.
//   - Without a sort, results come in _id order. sort orders by type first
//     (missing and null, numbers, strings, objects, arrays, booleans, the
//     MongoDB order), then by value; a field holding an array sorts by its
//     least element ascending and its greatest descending (an empty array
//     before null). A sort path through an array sorts as missing. Ties are
//     broken by _id, ascending.
//   - updateOne, deleteOne and findOne without a sort act on the matching
//     document with the least _id.
//   - An update is applied to each matched document on its own, atomically;
//     modified counts the documents whose content changed.
//
// Writes are effectively once per IdempotencyKey: see DataRequest. The
// embedded store records each write's result in the write's transaction,
// so any redelivery returns it. The mongo store has no transactions: it
// records the result after the write, and meanwhile relies on marks (an
// insert's documents carry its key; an updated document the keys of its
// last updates), so a redelivery after a crash halfway inserts or updates
// only the rest; a deleteMany cut short deletes the rest and reports only
// those. An insertMany refused for a duplicate _id stores nothing in the
// embedded store and the other documents in mongo.

// Data operations.
const (
	OpInsertOne  = "insertOne"
	OpInsertMany = "insertMany"
	OpFindOne    = "findOne"
	OpFind       = "find"
	OpUpdateOne  = "updateOne"
	OpUpdateMany = "updateMany"
	OpDeleteOne  = "deleteOne"
	OpDeleteMany = "deleteMany"
	OpCount      = "count"
)

// Error codes of data operations, carried by *events.Error.
const (
	// CodeDataInvalid: the request cannot be run as given (bad filter,
	// update on a field of the wrong type, and so on). Permanent.
	CodeDataInvalid = "db_invalid"
	// CodeDataTooLarge: a document, the request or the result passes its cap.
	CodeDataTooLarge = "db_too_large"
	// CodeDataConflict: an insert names an _id that another request stored.
	CodeDataConflict = "db_conflict"
	// CodeDataTimeout: the operation ran past its deadline.
	CodeDataTimeout = "db_timeout"
)

// Data limits shared by both adapters.
const (
	// DefaultFindLimit is how many documents find returns when the request
	// names no limit.
	DefaultFindLimit = 100
	// MaxDataLimit bounds limit, and MaxInsertDocuments the documents of one
	// insertMany.
	MaxDataLimit       = 1000
	MaxInsertDocuments = 1000
	// MaxWriteDocuments bounds the documents one updateMany or deleteMany
	// may touch, so a write stays one bounded step; past it the request
	// fails and asks for a narrower filter.
	MaxWriteDocuments = 10000
	// DefaultMaxDocumentBytes caps one stored document (as JSON).
	DefaultMaxDocumentBytes = 1 << 20
	// DefaultMaxResultBytes caps the documents one request returns, the
	// documents one insert sends, and the documents one updateMany changes
	// (it holds them at once; past the cap it changes nothing).
	DefaultMaxResultBytes = 16 << 20
	// MaxIDBytes caps an _id.
	MaxIDBytes = 512
	// MaxPathDepth caps the segments of a path and the nesting of a filter.
	MaxPathDepth = 16
	// A list of a filter ($in, $nin, $and, $or) holds at most MaxDataLimit
	// entries; a whole filter at most MaxFilterConditions conditions on
	// fields and MaxFilterValues values in all its $in and $nin lists, so
	// that nesting cannot multiply them past what a store compiles quickly.
	MaxFilterConditions = 1000
	MaxFilterValues     = 10000
	// DataWriteRetention is how long a write's result is kept for
	// redelivery: far longer than any redelivery waits.
	DataWriteRetention = 7 * 24 * time.Hour
)

// DataRequest is one operation on one collection of one user's data space.
// Values are JSON-like Go values (nil, bool, numbers, string, []any,
// map[string]any) as the node renders them; the store checks all of it.
type DataRequest struct {
	UserID     string
	Collection string
	Operation  string
	Document   any   // insertOne: an object
	Documents  []any // insertMany: objects
	Filter     map[string]any
	Update     map[string]any
	Sort       []SortKey
	Projection map[string]any
	// Limit is the most documents find returns (DefaultFindLimit when 0) or
	// count counts (no bound when 0).
	Limit int
	// IdempotencyKey names the write for redelivery ("<executionId>:
	// <nodeId>"): an insert under a key already applied returns the same
	// insertedIds and adds nothing; an update or delete returns its
	// recorded result instead of applying twice (see each adapter for the
	// guarantee it can give). "" means no protection.
	IdempotencyKey string
	// MaxDocumentBytes and MaxResultBytes override the default caps when > 0.
	MaxDocumentBytes int
	MaxResultBytes   int
}

// SortKey is one field of a sort, in priority order.
type SortKey struct {
	Path string
	Desc bool
}

// DataResult is what an operation returns; which fields are set depends on
// the operation (see Output).
type DataResult struct {
	Documents   []map[string]any `json:"documents,omitempty"`
	Document    map[string]any   `json:"document,omitempty"`
	InsertedIDs []string         `json:"insertedIds,omitempty"`
	Matched     int64            `json:"matched"`
	Modified    int64            `json:"modified"`
	Deleted     int64            `json:"deleted"`
	Count       int64            `json:"count"`
}

// Output is the result as the DATABASE node reports it for op: exactly the
// contract's keys, with empty lists as [] and a missing document as null.
func (r *DataResult) Output(op string) map[string]any {
	switch op {
	case OpFind:
		docs := r.Documents
		if docs == nil {
			docs = []map[string]any{}
		}
		return map[string]any{"documents": docs}
	case OpFindOne:
		if r.Document == nil {
			return map[string]any{"document": nil}
		}
		return map[string]any{"document": r.Document}
	case OpInsertOne, OpInsertMany:
		ids := r.InsertedIDs
		if ids == nil {
			ids = []string{}
		}
		return map[string]any{"insertedIds": ids}
	case OpUpdateOne, OpUpdateMany:
		return map[string]any{"matched": r.Matched, "modified": r.Modified}
	case OpDeleteOne, OpDeleteMany:
		return map[string]any{"deleted": r.Deleted}
	case OpCount:
		return map[string]any{"count": r.Count}
	}
	return map[string]any{}
}

// recorded is the part of a write's result kept for redelivery.
type recorded struct {
	InsertedIDs []string `json:"i,omitempty"`
	Matched     int64    `json:"m,omitempty"`
	Modified    int64    `json:"n,omitempty"`
	Deleted     int64    `json:"d,omitempty"`
}

// EncodeRecord is the stored form of a write's result.
func EncodeRecord(r *DataResult) []byte {
	raw, _ := json.Marshal(recorded{InsertedIDs: r.InsertedIDs, Matched: r.Matched, Modified: r.Modified, Deleted: r.Deleted})
	return raw
}

// DecodeRecord reads what EncodeRecord stored.
func DecodeRecord(raw []byte) (*DataResult, error) {
	var rec recorded
	if err := json.Unmarshal(raw, &rec); err != nil {
		return nil, err
	}
	return &DataResult{InsertedIDs: rec.InsertedIDs, Matched: rec.Matched, Modified: rec.Modified, Deleted: rec.Deleted}, nil
}

// DataStore runs operations on users' data spaces. Every operation is
// confined to req.UserID's documents: no collection name, filter or _id
// reaches another user's.
type DataStore interface {
	Data(ctx context.Context, req DataRequest) (*DataResult, error)
}
