package nodes

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/weftdev/weft/events"
	"github.com/weftdev/weft/persistence"
	"github.com/weftdev/weft/workers/flow"
)

// DATABASE runs one document operation on the data space of the user who
// owns the execution: every string of its config may hold {{ }} templates
// (a lone {{ expr }} keeps its type, so a document or a list computed
// upstream can be inserted whole), the rendered config becomes a
// persistence.DataRequest and the store runs it. The semantics of filters,
// updates and sorts are the store's (persistence/data.go), the same on
// every adapter.
//
// Every run carries the node's idempotency key, so a redelivered or retried
// write is applied once: inserts make the same _ids, updates and deletes
// return the recorded result.
//
// Failures: a request the store refuses (db_invalid), one too large
// (db_too_large) or a duplicate _id (db_conflict) is permanent; a query
// past its time limit (db_timeout) or a store that does not answer
// (db_unavailable) is transient. An unconfigured process fails every
// DATABASE node with db_unconfigured.

// DefaultDatabaseTimeout is how long one operation may run when
// DatabaseConfig sets no QueryTimeout.
const DefaultDatabaseTimeout = 5 * time.Second

// DataStore is what DATABASE needs of a store; both persistence adapters
// satisfy it.
type DataStore interface {
	Data(ctx context.Context, req persistence.DataRequest) (*persistence.DataResult, error)
}

// DatabaseConfig is how a DATABASE runner works: its store and limits.
type DatabaseConfig struct {
	// Store runs the operations; nil leaves DATABASE unconfigured.
	Store DataStore
	// QueryTimeout bounds one operation; zero means DefaultDatabaseTimeout.
	QueryTimeout time.Duration
	// MaxResultBytes caps what one read returns (and one insert sends);
	// zero means persistence.DefaultMaxResultBytes.
	MaxResultBytes int
	// MaxDocumentBytes caps one stored document; zero means
	// persistence.DefaultMaxDocumentBytes.
	MaxDocumentBytes int
}

// dbNode is one configured DATABASE runner.
type dbNode struct{ cfg DatabaseConfig }

// The registered DATABASE runner has no store: an engine runs the type
// with its own (workers.Config.Runners, from NewDatabase), as the store is
// the engine's, not the process's.
func init() { Register(flow.TypeDatabase, NewDatabase(DatabaseConfig{})) }

// NewDatabase returns a DATABASE spec for cfg.
func NewDatabase(cfg DatabaseConfig) Spec { return Spec{Runner: newDBNode(cfg)} }

func newDBNode(cfg DatabaseConfig) *dbNode {
	if cfg.QueryTimeout <= 0 {
		cfg.QueryTimeout = DefaultDatabaseTimeout
	}
	return &dbNode{cfg: cfg}
}

// Run renders the node's config and runs it as one operation.
func (d *dbNode) Run(ctx context.Context, in Input) (any, error) {
	if d.cfg.Store == nil {
		return nil, Permanent("db_unconfigured", "no data store is configured for DATABASE nodes in this process")
	}
	req, err := d.request(in)
	if err != nil {
		return nil, err
	}
	qctx, cancel := context.WithTimeout(ctx, d.cfg.QueryTimeout)
	defer cancel()
	res, err := d.cfg.Store.Data(qctx, req)
	if err != nil {
		return nil, d.storeError(ctx, err)
	}
	return res.Output(req.Operation), nil
}

// request renders the params into a request. The store checks every part
// again; here only the shapes a request needs are checked.
func (d *dbNode) request(in Input) (persistence.DataRequest, error) {
	req := persistence.DataRequest{
		UserID: in.UserID, IdempotencyKey: in.IdempotencyKey,
		MaxDocumentBytes: d.cfg.MaxDocumentBytes, MaxResultBytes: d.cfg.MaxResultBytes,
	}
	p := in.Node.Params
	vals := map[string]any{}
	for _, k := range []string{"operation", "collection", "document", "documents", "filter", "update", "sort", "limit", "projection"} {
		raw, ok := p[k]
		if !ok {
			continue
		}
		v, err := flow.Render(raw, in.Scope)
		if err != nil {
			return req, exprFailure("template_error", k, err)
		}
		vals[k] = v
	}
	var ok bool
	if req.Operation, ok = vals["operation"].(string); !ok {
		return req, invalidDB("operation must render to a string")
	}
	if req.Collection, ok = vals["collection"].(string); !ok {
		return req, invalidDB("collection must render to a string")
	}
	req.Document = vals["document"]
	if v, has := vals["documents"]; has {
		list, ok := v.([]any)
		if !ok {
			return req, invalidDB("documents must render to a list of documents")
		}
		req.Documents = list
	}
	var err error
	if req.Filter, err = object(vals, "filter"); err != nil {
		return req, err
	}
	if req.Update, err = object(vals, "update"); err != nil {
		return req, err
	}
	if req.Projection, err = object(vals, "projection"); err != nil {
		return req, err
	}
	if req.Sort, err = sortKeys(vals["sort"]); err != nil {
		return req, err
	}
	if v, has := vals["limit"]; has {
		f, ok := number(v)
		if !ok || f != math.Trunc(f) || f < 1 || f > persistence.MaxDataLimit {
			return req, invalidDB("limit must be a whole number between 1 and %d", persistence.MaxDataLimit)
		}
		req.Limit = int(f)
	}
	return req, nil
}

func invalidDB(format string, args ...any) *Error {
	return Permanent(persistence.CodeDataInvalid, format, args...)
}

// object returns vals[key] as an object; absent or null is nil.
func object(vals map[string]any, key string) (map[string]any, error) {
	v := vals[key]
	if v == nil {
		return nil, nil
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, invalidDB("%s must render to an object", key)
	}
	return m, nil
}

// sortKeys reads a sort: {"field": 1|-1} with one field, or a list of such
// objects in priority order (a JSON object's key order does not survive
// decoding, so more than one field must be a list).
func sortKeys(v any) ([]persistence.SortKey, error) {
	var items []any
	switch x := v.(type) {
	case nil:
		return nil, nil
	case map[string]any:
		if len(x) > 1 {
			return nil, invalidDB(`sort by more than one field must be a list, as in [{"a": 1}, {"b": -1}]`)
		}
		items = []any{x}
	case []any:
		items = x
	default:
		return nil, invalidDB("sort must render to an object or a list of objects")
	}
	keys := make([]persistence.SortKey, 0, len(items))
	for i, it := range items {
		m, ok := it.(map[string]any)
		if !ok || len(m) != 1 {
			return nil, invalidDB("sort[%d] must be an object with one field", i)
		}
		for path, dir := range m {
			f, ok := number(dir)
			if !ok || (f != 1 && f != -1) {
				return nil, invalidDB("sort.%s must be 1 (ascending) or -1 (descending)", path)
			}
			keys = append(keys, persistence.SortKey{Path: path, Desc: f == -1})
		}
	}
	return keys, nil
}

// number reads a rendered number: expressions yield ints, JSON floats.
func number(v any) (float64, bool) {
	switch x := v.(type) {
	case int:
		return float64(x), true
	case int64:
		return float64(x), true
	case float64:
		return x, true
	case json.Number:
		f, err := x.Float64()
		return f, err == nil
	}
	return 0, false
}

// storeError classifies a store's error for the engine's retry policy.
func (d *dbNode) storeError(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err() // the node's own deadline or a cancel: Classify knows them
	}
	var e *events.Error
	if !errors.As(err, &e) {
		if errors.Is(err, context.DeadlineExceeded) {
			return Transient(persistence.CodeDataTimeout, "the operation ran past its %s time limit", d.cfg.QueryTimeout)
		}
		return Transient("db_unavailable", "the data store failed: %v", err)
	}
	switch e.Code {
	case persistence.CodeDataTimeout:
		return Transient(e.Code, "the operation ran past its %s time limit", d.cfg.QueryTimeout)
	case persistence.CodeDataInvalid, persistence.CodeDataTooLarge, persistence.CodeDataConflict:
		return Permanent(e.Code, "%s", e.Message)
	case events.CodeInternal, events.CodeUnavailable:
		return Transient("db_unavailable", "the data store failed: %s", e.Message)
	}
	return Permanent(e.Code, "%s", fmt.Sprint(e.Message))
}
