package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	gojson "github.com/goccy/go-json"

	"github.com/weftdev/weft/events"
	"github.com/weftdev/weft/persistence"
)

// terminalSQL lists the statuses persistence.Terminal calls final, for the
// WHERE clauses that keep a final state final.
const terminalSQL = `('completed', 'failed', 'cancelled', 'skipped')`

const executionColumns = `e.id, e.user_id, e.workflow_id, e.workflow_version, e.status, e.inputs,
	e.output, e.error, e.idempotency_key, e.created_at, e.started_at, e.finished_at`

// executionWithNodes reads one execution and all its nodes in one
// statement, so both come from the same snapshot.
const executionWithNodes = `SELECT ` + executionColumns + `, e.nodes,
	n.node_id, n.type, n.status, n.attempts, n.started_at, n.finished_at, n.output, n.error
FROM executions e LEFT JOIN execution_nodes n ON n.execution_id = e.id `

const insertExecution = `INSERT INTO executions (id, user_id, workflow_id, workflow_version, status,
	inputs, output, error, idempotency_key, created_at, started_at, finished_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT DO NOTHING`

// insertEnded records an execution that has ended, its nodes in the row.
const insertEnded = `INSERT INTO executions (id, user_id, workflow_id, workflow_version, status,
	inputs, output, error, idempotency_key, created_at, started_at, finished_at, nodes)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT DO NOTHING`

// upsertNodes writes node states, several rows per statement (see
// rowsStatement). The WHERE on the update makes the first terminal write
// win: a stored final state is never replaced, while a non-final one is
// replaced by anything. A write without a start time keeps the one already
// stored.
const upsertNodes = `INSERT INTO execution_nodes (execution_id, node_id, type, status, attempts,
	started_at, finished_at, output, error)
VALUES %s
ON CONFLICT (execution_id, node_id) DO UPDATE SET
	type = excluded.type, status = excluded.status, attempts = excluded.attempts,
	started_at = coalesce(excluded.started_at, execution_nodes.started_at),
	finished_at = excluded.finished_at, output = excluded.output, error = excluded.error
WHERE execution_nodes.status NOT IN ` + terminalSQL

const nodeRow = `(?, ?, ?, ?, ?, ?, ?, ?, ?)`

const (
	insertLogs = `INSERT INTO execution_logs (execution_id, node_id, at, level, message) VALUES %s`
	logRow     = `(?, ?, ?, ?, ?)`
)

// maxRows is the most rows one multi-row statement writes. Statements are
// prepared once per row count, so this also bounds how many the writer
// keeps; larger writes are cut into chunks.
const maxRows = 16

// rowsStatements holds, for each n in 1..maxRows, a statement writing n
// rows, built from a template with one %s for its VALUES list.
type rowsStatements [maxRows + 1]string

func newRowsStatements(template, row string) *rowsStatements {
	var r rowsStatements
	values := row
	for n := 1; n <= maxRows; n++ {
		r[n] = fmt.Sprintf(template, values)
		values += ", " + row
	}
	return &r
}

var (
	upsertNodesN = newRowsStatements(upsertNodes, nodeRow)
	insertLogsN  = newRowsStatements(insertLogs, logRow)
)

// execRows writes rows (each a slice of arguments) with as few statements
// as it can.
func (t *wtx) execRows(stmts *rowsStatements, rows [][]any) error {
	for len(rows) > 0 {
		n := min(len(rows), maxRows)
		var args []any
		for _, r := range rows[:n] {
			args = append(args, r...)
		}
		if _, err := t.exec(stmts[n], args...); err != nil {
			return internal(err)
		}
		rows = rows[n:]
	}
	return nil
}

// queryer runs a query on the read pool or, inside a write, on the
// writer's connection.
type queryer interface {
	query(query string, args ...any) (*sql.Rows, error)
}

// reader is the read pool as a queryer.
type reader struct {
	ctx context.Context
	s   *Store
}

// query runs a read through a statement prepared once per Store: the
// engine loads an execution on every step, and preparing the statement
// each time cost as much as running it.
func (r reader) query(query string, args ...any) (*sql.Rows, error) {
	if st, ok := r.s.stmts.Load(query); ok {
		return st.(*sql.Stmt).QueryContext(r.ctx, args...)
	}
	st, err := r.s.read.PrepareContext(context.WithoutCancel(r.ctx), query)
	if err != nil {
		return nil, err
	}
	if prev, loaded := r.s.stmts.LoadOrStore(query, st); loaded {
		_ = st.Close()
		st = prev.(*sql.Stmt)
	}
	return st.QueryContext(r.ctx, args...)
}

// CreateExecution inserts e unless its id or its user's idempotency key is
// taken; the single writer makes the check and the insert one step, so of
// racing creates exactly one inserts. An id taken by another user's
// execution is a conflict, so that nobody learns of an execution not
// theirs.
func (s *Store) CreateExecution(ctx context.Context, e *persistence.Execution) (*persistence.Execution, bool, error) {
	ne, err := persistence.NormalizeExecution(e, s.stamp(e.CreatedAt))
	if err != nil {
		return nil, false, err
	}
	nodes, err := nodeArgs(ne.ID, ne.Nodes)
	if err != nil {
		return nil, false, err
	}
	args, err := executionArgs(ne)
	if err != nil {
		return nil, false, err
	}

	var (
		stored  *persistence.Execution
		created bool
	)
	err = s.doOptimistic(ctx, func(t *wtx) error {
		stored, created = nil, false
		res, err := t.exec(insertExecution, args...)
		if err != nil {
			return internal(err)
		}
		if n, err := res.RowsAffected(); err != nil {
			return internal(err)
		} else if n == 1 {
			if err := t.execRows(upsertNodesN, nodes); err != nil {
				return err
			}
			stored, created = ne, true
			return nil
		}
		id := ne.ID
		if ne.IdempotencyKey != "" {
			// The id, if taken, wins over the key, as the interface says.
			var found sql.NullString
			err := t.queryRow(`SELECT coalesce(
				(SELECT id FROM executions WHERE id = ?),
				(SELECT id FROM executions WHERE user_id = ? AND idempotency_key = ?))`,
				ne.ID, ne.UserID, ne.IdempotencyKey).Scan(&found)
			if err != nil {
				return internal(err)
			}
			id = found.String
		}
		stored, err = loadExecution(t, `WHERE e.id = ?`, id)
		if err != nil {
			return err
		}
		if stored.UserID != ne.UserID {
			stored = nil
			return events.Errorf(events.CodeConflict, "execution already exists")
		}
		return nil
	})
	if err != nil {
		return nil, false, err
	}
	return stored, created, nil
}

// GetExecution returns one of the user's executions with its nodes.
func (s *Store) GetExecution(ctx context.Context, userID, id string) (*persistence.Execution, error) {
	return loadExecution(reader{ctx, s}, `WHERE e.id = ? AND e.user_id = ?`, id, userID)
}

// LoadExecution returns an execution by id alone, with its nodes.
func (s *Store) LoadExecution(ctx context.Context, id string) (*persistence.Execution, error) {
	return loadExecution(reader{ctx, s}, `WHERE e.id = ?`, id)
}

// loadExecution reads one execution, with its nodes, through q.
func loadExecution(q queryer, where string, args ...any) (*persistence.Execution, error) {
	rows, err := q.query(executionWithNodes+where, args...)
	if err != nil {
		return nil, internal(err)
	}
	defer func() { _ = rows.Close() }()
	var e *persistence.Execution
	for rows.Next() {
		var (
			er                    execRow
			ended                 sql.NullString
			n                     persistence.NodeState
			nodeID, ntype, status sql.NullString
			attempts              sql.NullInt64
			started, finished     sql.NullInt64
			output, nerr          sql.NullString
		)
		dest := append(er.dest(), &ended, &nodeID, &ntype, &status, &attempts, &started, &finished, &output, &nerr)
		if err := rows.Scan(dest...); err != nil {
			return nil, internal(err)
		}
		if e == nil {
			if e, err = er.execution(); err != nil {
				return nil, err
			}
			e.Nodes = map[string]*persistence.NodeState{}
			if ended.Valid {
				if err := decodeEndedNodes(ended.String, e.Nodes); err != nil {
					return nil, err
				}
			}
		}
		if !nodeID.Valid {
			continue
		}
		n.Type, n.Status, n.Attempts = ntype.String, status.String, int(attempts.Int64)
		n.StartedAt, n.FinishedAt = timePtr(started), timePtr(finished)
		if output.Valid {
			n.Output = json.RawMessage(output.String)
		}
		if nerr.Valid {
			n.Error = new(persistence.NodeError)
			if err := json.Unmarshal([]byte(nerr.String), n.Error); err != nil {
				return nil, internal(err)
			}
		}
		e.Nodes[nodeID.String] = &n
	}
	if err := rows.Err(); err != nil {
		return nil, internal(err)
	}
	if e == nil {
		return nil, events.Errorf(events.CodeNotFound, "execution not found")
	}
	return e, nil
}

// execRow holds the columns of an executions row as scanned.
type execRow struct {
	id, user, workflow, status, inputs, key string
	version, created                        int64
	output, errJSON                         sql.NullString
	started, finished                       sql.NullInt64
}

// dest lists the scan targets in the order of executionColumns.
func (r *execRow) dest() []any {
	return []any{&r.id, &r.user, &r.workflow, &r.version, &r.status, &r.inputs,
		&r.output, &r.errJSON, &r.key, &r.created, &r.started, &r.finished}
}

func (r *execRow) execution() (*persistence.Execution, error) {
	e := &persistence.Execution{
		ID: r.id, UserID: r.user, WorkflowID: r.workflow, WorkflowVersion: int(r.version),
		Status: r.status, Inputs: json.RawMessage(r.inputs), IdempotencyKey: r.key,
		CreatedAt: fromMillis(r.created), StartedAt: timePtr(r.started), FinishedAt: timePtr(r.finished),
	}
	if r.output.Valid {
		e.Output = json.RawMessage(r.output.String)
	}
	if r.errJSON.Valid {
		e.Error = new(persistence.ExecutionError)
		if err := json.Unmarshal([]byte(r.errJSON.String), e.Error); err != nil {
			return nil, internal(err)
		}
	}
	return e, nil
}

// ListExecutions pages through the user's executions by id, newest first,
// asking for one row more than the page to learn whether another follows.
// The query names only the filters in use, so SQLite picks the index that
// matches them.
func (s *Store) ListExecutions(ctx context.Context, userID string, f persistence.ExecutionFilter, p persistence.Page) ([]persistence.Execution, string, error) {
	limit := persistence.PageLimit(p.Limit)
	var q strings.Builder
	q.WriteString(`SELECT ` + executionColumns + ` FROM executions e WHERE e.user_id = ?`)
	args := []any{userID}
	if f.WorkflowID != "" {
		q.WriteString(` AND e.workflow_id = ?`)
		args = append(args, f.WorkflowID)
	}
	if f.Status != "" {
		q.WriteString(` AND e.status = ?`)
		args = append(args, f.Status)
	}
	if p.Cursor != "" {
		q.WriteString(` AND e.id < ?`)
		args = append(args, p.Cursor)
	}
	q.WriteString(` ORDER BY e.id DESC LIMIT ?`)
	args = append(args, limit+1)
	list, err := s.executions(ctx, q.String(), args...)
	if err != nil {
		return nil, "", err
	}
	if len(list) <= limit {
		return list, "", nil
	}
	list = list[:limit]
	return list, list[limit-1].ID, nil
}

// UnfinishedExecutions lists executions still queued or running created
// before the given time, oldest first. The WHERE repeats the condition of
// the partial index executions_unfinished so that SQLite uses it.
func (s *Store) UnfinishedExecutions(ctx context.Context, before time.Time, limit int) ([]persistence.Execution, error) {
	return s.executions(ctx, `SELECT `+executionColumns+` FROM executions e
		WHERE e.status IN ('queued', 'running') AND e.created_at < ?
		ORDER BY e.created_at, e.id LIMIT ?`, toMillis(before), persistence.WorkLimit(limit))
}

// executions runs a listing query on the read pool.
func (s *Store) executions(ctx context.Context, query string, args ...any) ([]persistence.Execution, error) {
	rows, err := s.read.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, internal(err)
	}
	defer func() { _ = rows.Close() }()
	list := []persistence.Execution{}
	for rows.Next() {
		var r execRow
		if err := rows.Scan(r.dest()...); err != nil {
			return nil, internal(err)
		}
		e, err := r.execution()
		if err != nil {
			return nil, err
		}
		list = append(list, *e)
	}
	if err := rows.Err(); err != nil {
		return nil, internal(err)
	}
	return list, nil
}

// ExecutionLogs returns the logs of one of the user's executions, oldest
// first (by time, then in the order they were appended). One statement
// checks the owner and reads the lines: the first row says whether the
// execution is the user's, the rest are its lines.
func (s *Store) ExecutionLogs(ctx context.Context, userID, id string, limit int) ([]persistence.NodeLog, error) {
	rows, err := s.read.QueryContext(ctx, `
		SELECT * FROM (SELECT 0, '', 0, '', '' FROM executions WHERE id = ? AND user_id = ?)
		UNION ALL
		SELECT * FROM (SELECT 1, node_id, at, level, message FROM execution_logs
			WHERE execution_id = ? AND EXISTS (SELECT 1 FROM executions WHERE id = ? AND user_id = ?)
			ORDER BY at, seq LIMIT ?)`,
		id, userID, id, id, userID, persistence.WorkLimit(limit))
	if err != nil {
		return nil, internal(err)
	}
	defer func() { _ = rows.Close() }()
	var (
		logs  = []persistence.NodeLog{}
		found bool
	)
	for rows.Next() {
		var (
			kind int
			l    persistence.NodeLog
			at   int64
		)
		if err := rows.Scan(&kind, &l.NodeID, &at, &l.Level, &l.Message); err != nil {
			return nil, internal(err)
		}
		if kind == 0 {
			found = true
			continue
		}
		l.At = fromMillis(at)
		logs = append(logs, l)
	}
	if err := rows.Err(); err != nil {
		return nil, internal(err)
	}
	if !found {
		return nil, events.Errorf(events.CodeNotFound, "execution not found")
	}
	return logs, nil
}

// ApplyExecution applies one engine step in one write: the single writer
// reads the status and writes in the same transaction, so "only if not yet
// terminal" is a plain check here, and of racing finishers exactly one
// sees its UPDATE change a row.
func (s *Store) ApplyExecution(ctx context.Context, u persistence.ExecutionUpdate) (persistence.ApplyResult, error) {
	// Everything that can be prepared outside the writer is, to keep the
	// writer's time per request short.
	var (
		nodes [][]any
		err   error
	)
	var create []any
	var ended string // the nodes as one column, for an execution recorded as it ends
	if u.Create != nil && u.Finish != nil {
		// Mostly not stored yet: its nodes go in its row (see applyNew),
		// and rows for them are made only if it is found stored.
		if ended, err = encodeEndedNodes(u.Nodes); err != nil {
			return persistence.ApplyResult{}, err
		}
	} else if nodes, err = nodeArgs(u.ID, u.Nodes); err != nil {
		return persistence.ApplyResult{}, err
	}
	if u.Create != nil {
		if u.Create.ID != u.ID {
			return persistence.ApplyResult{}, events.Errorf(events.CodeInvalid, "the execution to create is not the one updated")
		}
		ne, err := persistence.NormalizeExecution(u.Create, s.stamp(u.Create.CreatedAt))
		if err != nil {
			return persistence.ApplyResult{}, err
		}
		if create, err = executionArgs(ne); err != nil {
			return persistence.ApplyResult{}, err
		}
	}
	logs := make([][]any, len(u.Logs))
	for i, l := range u.Logs {
		logs[i] = []any{u.ID, l.NodeID, toMillis(s.stamp(l.At)), l.Level, l.Message}
	}
	var (
		start  []any
		finish []any
		began  any // the start time, for an execution started and finished at once
	)
	if u.Start != nil {
		began = toMillis(s.stamp(*u.Start))
		start = []any{began, u.ID}
	}
	if f := u.Finish; f != nil {
		if !finishStatus(f.Status) {
			return persistence.ApplyResult{}, events.Errorf(events.CodeInvalid, "cannot finish an execution as %q", f.Status)
		}
		errJSON, err := nullJSON(f.Error)
		if err != nil {
			return persistence.ApplyResult{}, err
		}
		finish = []any{f.Status, nullText(f.Output), errJSON, toMillis(s.stamp(f.At)), began, u.ID}
	}

	var res persistence.ApplyResult
	err = s.doOptimistic(ctx, func(t *wtx) error {
		res = persistence.ApplyResult{}
		if ended != "" {
			// An execution recorded as it ends is mostly not stored yet
			// (a waited-for one is recorded by its starter alone): the
			// insert is tried first, and the look made only if it meets
			// the record.
			if inserted, err := applyNew(t, create, start, finish, nodes, ended, logs, &res); err != nil || inserted {
				return reloadAfter(t, u, &res, err)
			}
		}
		var status string
		err := t.queryRow(`SELECT status FROM executions WHERE id = ?`, u.ID).Scan(&status)
		switch {
		case errors.Is(err, sql.ErrNoRows) && create != nil:
			// Looked for first otherwise, as an insert that meets the
			// record costs more than the look.
			inserted, err := applyNew(t, create, start, finish, nodes, ended, logs, &res)
			if err != nil {
				return err
			}
			if !inserted {
				// Not the id, looked for just before in this transaction:
				// the user's idempotency key, taken by another execution.
				return events.Errorf(events.CodeConflict, "the idempotency key is taken by another execution")
			}
		case err != nil:
			return notFound(err, "execution")
		case persistence.Terminal(status):
			res.Ended = true
		default:
			if nodes == nil && len(u.Nodes) > 0 {
				if nodes, err = nodeArgs(u.ID, u.Nodes); err != nil {
					return err
				}
			}
			if err := applyOpen(t, status, start, finish, nodes, logs, &res); err != nil {
				return err
			}
		}
		return reloadAfter(t, u, &res, nil)
	})
	if err != nil {
		return persistence.ApplyResult{}, err
	}
	return res, nil
}

// applyOpen writes an update's nodes, logs, start and finish to an
// execution that has not ended. An execution started and finished by one
// update (a run of pure nodes) has its row written once.
func applyOpen(t *wtx, status string, start, finish []any, nodes, logs [][]any, res *persistence.ApplyResult) error {
	if err := t.execRows(upsertNodesN, nodes); err != nil {
		return err
	}
	if err := t.execRows(insertLogsN, logs); err != nil {
		return err
	}
	if finish == nil {
		if start != nil && status == persistence.StatusQueued {
			if _, err := t.exec(`UPDATE executions SET status = 'running', started_at = ? WHERE id = ? AND status = 'queued'`, start...); err != nil {
				return internal(err)
			}
		}
		return nil
	}
	r, err := t.exec(`UPDATE executions SET status = ?, output = ?, error = ?, finished_at = ?,
		started_at = coalesce(started_at, ?) WHERE id = ? AND status NOT IN `+terminalSQL, finish...)
	if err != nil {
		return internal(err)
	}
	n, err := r.RowsAffected()
	if err != nil {
		return internal(err)
	}
	res.Finished = n == 1
	return nil
}

// reloadAfter ends an update that did not fail (err nil): it reads the
// execution back when the update asked for it.
func reloadAfter(t *wtx, u persistence.ExecutionUpdate, res *persistence.ApplyResult, err error) error {
	if err != nil || !u.Reload {
		return err
	}
	e, err := loadExecution(t, `WHERE e.id = ?`, u.ID)
	if err != nil {
		return err
	}
	res.Execution = e
	return nil
}

// applyNew records an execution that is not stored yet as the update
// leaves it: one insert of the row in its final state, rather than an
// insert as queued and an update, which would also add it to and remove it
// from the indexes of open executions.
//
// An execution that ends here keeps its nodes in its own row (ended, their
// JSON): it will not change again.
//
// It reports false, having written nothing, if a row with the execution's
// id or its user's idempotency key is there.
func applyNew(t *wtx, create, start, finish []any, nodes [][]any, ended string, logs [][]any, res *persistence.ApplyResult) (bool, error) {
	row := slices.Clone(create)
	stmt := insertExecution
	switch {
	case finish != nil:
		// status, output, error, finished_at; started_at if given.
		row[4], row[6], row[7], row[11] = finish[0], finish[1], finish[2], finish[3]
		if finish[4] != nil {
			row[10] = finish[4]
		}
		row, stmt, nodes = append(row, ended), insertEnded, nil
	case start != nil:
		row[4], row[10] = persistence.StatusRunning, start[0]
	}
	r, err := t.exec(stmt, row...)
	if err != nil {
		return false, internal(err)
	}
	if n, err := r.RowsAffected(); err != nil {
		return false, internal(err)
	} else if n == 0 {
		return false, nil
	}
	if err := t.execRows(upsertNodesN, nodes); err != nil {
		return false, err
	}
	if err := t.execRows(insertLogsN, logs); err != nil {
		return false, err
	}
	res.Finished = finish != nil
	return true, nil
}

// executionArgs are insertExecution's arguments for a normalised execution.
func executionArgs(ne *persistence.Execution) ([]any, error) {
	errJSON, err := nullJSON(ne.Error)
	if err != nil {
		return nil, err
	}
	return []any{ne.ID, ne.UserID, ne.WorkflowID, ne.WorkflowVersion, ne.Status,
		string(ne.Inputs), nullText(ne.Output), errJSON, ne.IdempotencyKey,
		toMillis(ne.CreatedAt), nullMillis(ne.StartedAt), nullMillis(ne.FinishedAt)}, nil
}

// finishStatus reports whether an execution may end in status.
func finishStatus(status string) bool {
	switch status {
	case persistence.StatusCompleted, persistence.StatusFailed, persistence.StatusCancelled:
		return true
	}
	return false
}

// nodeArgs turns node states into upsertNode arguments.
func nodeArgs(executionID string, nodes map[string]*persistence.NodeState) ([][]any, error) {
	args := make([][]any, 0, len(nodes))
	for id, n := range nodes {
		if err := persistence.ValidNode(id, n); err != nil {
			return nil, err
		}
		errJSON, err := nullJSON(n.Error)
		if err != nil {
			return nil, err
		}
		args = append(args, []any{executionID, id, n.Type, n.Status, n.Attempts,
			nullMillis(millisPtr(n.StartedAt)), nullMillis(millisPtr(n.FinishedAt)), nullText(n.Output), errJSON})
	}
	return args, nil
}

// nullText stores raw JSON as text, or NULL when there is none.
func nullText(raw json.RawMessage) any {
	if len(raw) == 0 {
		return nil
	}
	return string(raw)
}

// nullJSON encodes an error record, or NULL for a nil pointer.
func nullJSON[T any](v *T) (any, error) {
	if v == nil {
		return nil, nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, events.Errorf(events.CodeInvalid, "error record: %v", err)
	}
	return string(b), nil
}

func nullMillis(t *time.Time) any {
	if t == nil {
		return nil
	}
	return toMillis(*t)
}

func timePtr(v sql.NullInt64) *time.Time {
	if !v.Valid {
		return nil
	}
	t := fromMillis(v.Int64)
	return &t
}

// millisPtr is *t at the stored precision, in UTC.
var millisPtr = persistence.Millis

// endedNode is a node state as kept in an ended execution's row; times
// are Unix milliseconds, as in the columns.
type endedNode struct {
	Type       string                 `json:"type"`
	Status     string                 `json:"status"`
	Attempts   int                    `json:"attempts"`
	StartedAt  *int64                 `json:"startedAt,omitempty"`
	FinishedAt *int64                 `json:"finishedAt,omitempty"`
	Output     json.RawMessage        `json:"output,omitempty"`
	Error      *persistence.NodeError `json:"error,omitempty"`
}

// maxOutputNesting bounds how deep an output in a nodes column may nest:
// the decoder reads 10,000 levels, the column and its node take two.
const maxOutputNesting = 9_990

// nesting is how deep raw, valid JSON nests its arrays and objects; it
// scans only what could be that deep.
func nesting(raw []byte) int {
	if len(raw) <= maxOutputNesting {
		return 0 // too short to be that deep
	}
	depth, most, inString := 0, 0, false
	for i := 0; i < len(raw); i++ {
		switch c := raw[i]; {
		case inString && c == '\\':
			i++
		case c == '"':
			inString = !inString
		case inString:
		case c == '[' || c == '{':
			depth++
			most = max(most, depth)
		case c == ']' || c == '}':
			depth--
		}
	}
	return most
}

// columnBufs recycles the buffers encodeEndedNodes builds columns in.
var columnBufs = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

// encodeEndedNodes is the nodes column of an execution recorded as it
// ends: an object by node id, each node as endedNode encodes, written by
// hand into one buffer (an encoder finds its way through each node by
// reflection, and grows the stack of the goroutine that calls it). Outputs
// are kept as they are, as in a node's own row, once checked to be JSON
// that the decoder reads back (maxOutputNesting): one that is not would
// make the whole column unreadable.
func encodeEndedNodes(nodes map[string]*persistence.NodeState) (string, error) {
	p := columnBufs.Get().(*[]byte)
	b := (*p)[:0]
	defer func() {
		if cap(b) <= 1<<20 {
			*p = b[:0]
			columnBufs.Put(p)
		}
	}()
	b = append(b, '{')
	for id, n := range nodes {
		if err := persistence.ValidNode(id, n); err != nil {
			return "", err
		}
		if len(n.Output) > 0 && (!json.Valid(n.Output) || nesting(n.Output) > maxOutputNesting) {
			return "", events.Errorf(events.CodeInvalid, "node %q: its output is not JSON, or nested more than %d deep", id, maxOutputNesting)
		}
		if len(b) > 1 {
			b = append(b, ',')
		}
		b = append(events.AppendString(b, id), `:{"type":`...)
		b = events.AppendString(b, n.Type)
		b = append(b, `,"status":`...)
		b = events.AppendString(b, n.Status)
		b = append(b, `,"attempts":`...)
		b = strconv.AppendInt(b, int64(n.Attempts), 10)
		if n.StartedAt != nil {
			b = append(b, `,"startedAt":`...)
			b = strconv.AppendInt(b, toMillis(*n.StartedAt), 10)
		}
		if n.FinishedAt != nil {
			b = append(b, `,"finishedAt":`...)
			b = strconv.AppendInt(b, toMillis(*n.FinishedAt), 10)
		}
		if len(n.Output) > 0 {
			b = append(append(b, `,"output":`...), n.Output...)
		}
		if e := n.Error; e != nil {
			b = append(b, `,"error":{"code":`...)
			b = events.AppendString(b, e.Code)
			b = append(b, `,"message":`...)
			b = append(events.AppendString(b, e.Message), '}')
		}
		b = append(b, '}')
	}
	return string(append(b, '}')), nil
}

// decodeEndedNodes adds the nodes of an ended execution's row to into.
func decodeEndedNodes(col string, into map[string]*persistence.NodeState) error {
	var stored map[string]endedNode
	if err := gojson.Unmarshal([]byte(col), &stored); err != nil {
		return internal(fmt.Errorf("nodes column: %w", err))
	}
	for id, n := range stored {
		into[id] = &persistence.NodeState{Type: n.Type, Status: n.Status, Attempts: n.Attempts,
			StartedAt: timeOfMillis(n.StartedAt), FinishedAt: timeOfMillis(n.FinishedAt), Output: n.Output, Error: n.Error}
	}
	return nil
}

func timeOfMillis(ms *int64) *time.Time {
	if ms == nil {
		return nil
	}
	t := fromMillis(*ms)
	return &t
}
