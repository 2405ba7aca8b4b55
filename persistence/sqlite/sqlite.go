package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"runtime"
	"sync"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/weftdev/weft/events"
	"github.com/weftdev/weft/persistence"
)

// Store is the embedded persistence.Store: one SQLite file in WAL mode.
type Store struct {
	// write has exactly one connection, owned by w once Open returns:
	// every write goes through w (see writer), so writers queue in Go
	// instead of failing with SQLITE_BUSY and share commits.
	write *sql.DB
	w     *writer
	// read is a pool of query-only connections; WAL lets them run beside
	// the writer.
	read *sql.DB
	// stmts holds read statements prepared on read, by query text.
	stmts sync.Map
	now   func() time.Time
}

var _ persistence.Store = (*Store)(nil)

// Open opens (creating if needed) the database file at path and migrates
// its schema to the newest version.
func Open(ctx context.Context, path string) (*Store, error) {
	write, err := openDB(ctx, path, false)
	if err != nil {
		return nil, err
	}
	// One connection: SQLite allows one writer at a time anyway.
	write.SetMaxOpenConns(1)
	if err := migrate(ctx, write); err != nil {
		_ = write.Close()
		return nil, err
	}
	read, err := openDB(ctx, path, true)
	if err != nil {
		_ = write.Close()
		return nil, err
	}
	read.SetMaxOpenConns(max(4, runtime.GOMAXPROCS(0)))
	w, err := newWriter(ctx, write)
	if err != nil {
		_ = read.Close()
		_ = write.Close()
		return nil, err
	}
	return &Store{write: write, read: read, w: w, now: time.Now}, nil
}

// openDB opens one handle on path. The pragmas are in the DSN so that every
// connection the pool opens later gets them too.
func openDB(ctx context.Context, path string, readOnly bool) (*sql.DB, error) {
	q := url.Values{}
	q.Add("_pragma", "busy_timeout(10000)")
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "synchronous(NORMAL)")
	q.Add("_pragma", "foreign_keys(1)")
	if readOnly {
		q.Add("_pragma", "query_only(1)")
	} else {
		// Take the write lock at BEGIN: a deferred transaction that reads
		// first and then writes could otherwise fail to upgrade its lock.
		q.Set("_txlock", "immediate")
	}
	db, err := sql.Open("sqlite", "file:"+path+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	db.SetConnMaxIdleTime(0)
	db.SetConnMaxLifetime(0)
	if err := db.PingContext(ctx); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	return db, nil
}

// Ping checks that both the writer and the reader pool answer.
func (s *Store) Ping(ctx context.Context) error {
	err := s.do(ctx, func(t *wtx) error {
		var one int
		return t.queryRow(`SELECT 1`).Scan(&one)
	})
	if err != nil {
		return fmt.Errorf("sqlite: ping: %w", err)
	}
	if err := s.read.PingContext(ctx); err != nil {
		return fmt.Errorf("sqlite: ping: %w", err)
	}
	return nil
}

// Close stops the writer (after the batch it is committing) and closes
// both handles; the last one to close checkpoints the WAL.
func (s *Store) Close() error {
	s.stmts.Range(func(_, st any) bool {
		_ = st.(*sql.Stmt).Close()
		return true
	})
	return errors.Join(s.w.close(), s.read.Close(), s.write.Close())
}

// Times are stored as Unix milliseconds: the precision MongoDB keeps, so a
// record reads back the same from either adapter.
func toMillis(t time.Time) int64 { return t.UnixMilli() }

func fromMillis(v int64) time.Time { return time.UnixMilli(v).UTC() }

// stamp returns t, or the store's clock when the caller left it zero.
func (s *Store) stamp(t time.Time) time.Time {
	if t.IsZero() {
		t = s.now()
	}
	return t.UTC().Truncate(time.Millisecond)
}

// constraint maps a constraint violation to a coded error: a unique or
// primary key clash is a conflict, a missing referenced row (the owner) is
// not found. Other errors are wrapped as internal.
func constraint(err error, what string) error {
	if events.ErrorCode(err) != events.CodeInternal {
		return err // already coded, such as a closed store
	}
	var se *sqlite.Error
	if errors.As(err, &se) {
		switch se.Code() {
		case sqlite3.SQLITE_CONSTRAINT_UNIQUE, sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY:
			return events.Errorf(events.CodeConflict, "%s already exists", what)
		case sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY:
			return events.Errorf(events.CodeNotFound, "user not found")
		}
	}
	return internal(err)
}

// internal wraps a driver error so the caller sees CodeInternal and the
// cause stays in the chain for logging.
func internal(err error) error {
	return &events.Error{Code: events.CodeInternal, Message: "store error", Err: fmt.Errorf("sqlite: %w", err)}
}

// notFound turns sql.ErrNoRows into the coded not-found error.
func notFound(err error, what string) error {
	if errors.Is(err, sql.ErrNoRows) {
		return events.Errorf(events.CodeNotFound, "%s not found", what)
	}
	return internal(err)
}
