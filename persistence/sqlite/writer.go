package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/weftdev/weft/events"
)

// maxBatch bounds how many writes share one transaction, so that one
// commit never keeps the first caller of a long queue waiting too long.
const maxBatch = 256

// errClosed answers writes that arrive after Close.
var errClosed = events.Errorf(events.CodeUnavailable, "store is closed")

// writer owns the single write connection and commits in groups: it takes
// every write that is waiting (up to maxBatch), runs each inside its own
// SAVEPOINT of one transaction, commits once and then answers every caller.
// It commits as soon as it is free, with no linger: callers that arrive
// while a batch commits simply form the next batch, so the batch grows with
// the load by itself and a lone write waits for nothing.
type writer struct {
	conn *sql.Conn
	// stmts caches prepared statements by query text. Only the writer
	// goroutine touches it. Every query is a constant of this package, so
	// the cache stays small.
	stmts map[string]*sql.Stmt
	// reqs is unbuffered: a send succeeds only when the writer takes the
	// request, so no request can be stranded in a buffer at Close, and the
	// senders blocked on it are the queue the next batch drains.
	reqs chan *request
	quit chan struct{}
	done chan struct{}
	// batches and writes count commits and the requests they carried,
	// for tests and benchmarks.
	batches, writes atomic.Int64
	alone           atomic.Int64 // batches run again request by request

	closeOnce sync.Once
	closeErr  error
}

// request is one write: fn runs on the writer's connection inside the
// batch's transaction. fn may run twice (see runAlone), so it must assign
// its results rather than accumulate them.
type request struct {
	ctx  context.Context
	fn   func(*wtx) error
	err  error
	done chan struct{}
	// optimistic: a write that seldom fails runs in its batch without a
	// savepoint of its own (two statements fewer); should it fail, the
	// whole batch is rolled back and each request run again alone.
	optimistic bool
}

// wtx is what a write request sees: the write connection, in a
// transaction, with statements prepared once and reused.
type wtx struct{ w *writer }

func newWriter(ctx context.Context, db *sql.DB) (*writer, error) {
	conn, err := db.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("sqlite: writer: %w", err)
	}
	w := &writer{
		conn:  conn,
		stmts: map[string]*sql.Stmt{},
		reqs:  make(chan *request),
		quit:  make(chan struct{}),
		done:  make(chan struct{}),
	}
	go w.run()
	return w, nil
}

// close stops the writer after the batch in progress, then releases its
// statements and connection. Writes waiting to be taken fail with
// errClosed.
func (w *writer) close() error {
	w.closeOnce.Do(func() {
		close(w.quit)
		<-w.done
		var errs []error
		for _, st := range w.stmts {
			errs = append(errs, st.Close())
		}
		errs = append(errs, w.conn.Close())
		w.closeErr = errors.Join(errs...)
	})
	return w.closeErr
}

// do runs fn in the writer and returns its error. Once the writer has
// taken the request, do waits for its answer even if ctx ends, because
// the write may commit: reporting a failure then would be a lie.
func (s *Store) do(ctx context.Context, fn func(*wtx) error) error {
	return s.queue(&request{ctx: ctx, fn: fn, done: make(chan struct{})})
}

// doOptimistic is do for a write that seldom fails (see
// request.optimistic): the engine's own writes of executions.
func (s *Store) doOptimistic(ctx context.Context, fn func(*wtx) error) error {
	return s.queue(&request{ctx: ctx, fn: fn, done: make(chan struct{}), optimistic: true})
}

func (s *Store) queue(r *request) error {
	ctx := r.ctx
	select {
	case s.w.reqs <- r:
	case <-s.w.quit:
		return errClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	<-r.done
	return r.err
}

func (w *writer) run() {
	defer close(w.done)
	batch := make([]*request, 0, maxBatch)
	for {
		select {
		case <-w.quit: // takes precedence over waiting writes
			return
		default:
		}
		select {
		case r := <-w.reqs:
			batch = append(batch[:0], r)
		case <-w.quit:
			return
		}
		// Yield once before draining: the callers the last commit woke
		// are runnable but may not have run yet, and letting them queue
		// their next write makes batches about four times larger (and the
		// CPU per write ~18% lower) at full load. This is not a linger:
		// with nothing else runnable it returns at once.
		runtime.Gosched()
	fill:
		for len(batch) < maxBatch {
			select {
			case r := <-w.reqs:
				batch = append(batch, r)
			default:
				break fill
			}
		}
		w.commit(batch)
		w.batches.Add(1)
		w.writes.Add(int64(len(batch)))
		for i, r := range batch {
			close(r.done)
			batch[i] = nil
		}
	}
}

// commit runs a batch in one transaction. A single request needs no
// savepoint; in a larger batch each request gets one, so a failing request
// rolls back only its own statements, except an optimistic one, whose
// failure rolls back the batch and runs each request again alone. When the transaction itself fails
// (BEGIN, a savepoint statement, or COMMIT), everything is rolled back and
// each request is run again alone, so that one request's trouble cannot
// fail the others.
func (w *writer) commit(batch []*request) {
	live := batch[:0:0]
	for _, r := range batch {
		if err := r.ctx.Err(); err != nil {
			r.err = err // given up before it ran: nothing written
			continue
		}
		live = append(live, r)
	}
	switch len(live) {
	case 0:
		return
	case 1:
		w.runAlone(live[0])
		return
	}
	t := &wtx{w}
	if _, err := t.exec(`BEGIN IMMEDIATE`); err != nil {
		w.retryAlone(live)
		return
	}
	for _, r := range live {
		if r.optimistic {
			if r.err = r.fn(t); r.err != nil {
				w.rollback()
				w.retryAlone(live)
				return
			}
			continue
		}
		if _, err := t.exec(`SAVEPOINT r`); err != nil {
			w.rollback()
			w.retryAlone(live)
			return
		}
		r.err = r.fn(t)
		if r.err != nil {
			if _, err := t.exec(`ROLLBACK TO r`); err != nil {
				w.rollback()
				w.retryAlone(live)
				return
			}
		}
		if _, err := t.exec(`RELEASE r`); err != nil {
			w.rollback()
			w.retryAlone(live)
			return
		}
	}
	if _, err := t.exec(`COMMIT`); err != nil {
		w.rollback()
		w.retryAlone(live)
	}
}

func (w *writer) retryAlone(batch []*request) {
	w.alone.Add(1)
	for _, r := range batch {
		w.runAlone(r)
	}
}

// runAlone runs one request in its own transaction.
func (w *writer) runAlone(r *request) {
	t := &wtx{w}
	if _, err := t.exec(`BEGIN IMMEDIATE`); err != nil {
		r.err = internal(err)
		return
	}
	if r.err = r.fn(t); r.err != nil {
		w.rollback()
		return
	}
	if _, err := t.exec(`COMMIT`); err != nil {
		w.rollback()
		r.err = internal(err)
	}
}

// rollback ends the transaction if one is open. SQLite may already have
// rolled it back itself (after SQLITE_FULL, say); the error saying so is
// of no interest.
func (w *writer) rollback() {
	_, _ = w.conn.ExecContext(context.Background(), `ROLLBACK`)
}

// stmt returns the prepared statement for query, preparing it once.
func (w *writer) stmt(query string) (*sql.Stmt, error) {
	if st, ok := w.stmts[query]; ok {
		return st, nil
	}
	st, err := w.conn.PrepareContext(context.Background(), query)
	if err != nil {
		return nil, err
	}
	w.stmts[query] = st
	return st, nil
}

// The statements of a batch run with a context that is never cancelled:
// the driver interrupts a cancelled statement with sqlite3_interrupt, which
// would roll back the whole batch, not just one caller's part of it.

func (t *wtx) exec(query string, args ...any) (sql.Result, error) {
	st, err := t.w.stmt(query)
	if err != nil {
		return nil, err
	}
	return st.ExecContext(context.Background(), args...)
}

func (t *wtx) query(query string, args ...any) (*sql.Rows, error) {
	st, err := t.w.stmt(query)
	if err != nil {
		return nil, err
	}
	return st.QueryContext(context.Background(), args...)
}

// queryRow is QueryRow on the cached statement; a failure to prepare shows
// up as the Scan error.
func (t *wtx) queryRow(query string, args ...any) rowScanner {
	st, err := t.w.stmt(query)
	if err != nil {
		return errRow{err}
	}
	return st.QueryRowContext(context.Background(), args...)
}

// execOne runs a statement that must touch exactly one row; none is not
// found.
func (t *wtx) execOne(what, query string, args ...any) error {
	res, err := t.exec(query, args...)
	if err != nil {
		return internal(err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return internal(err)
	}
	if n == 0 {
		return events.Errorf(events.CodeNotFound, "%s not found", what)
	}
	return nil
}

// rowScanner is a *sql.Row or anything else that scans one row.
type rowScanner interface{ Scan(...any) error }

type errRow struct{ err error }

func (r errRow) Scan(...any) error { return r.err }
