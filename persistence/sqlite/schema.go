package sqlite

import (
	"context"
	"database/sql"
	"fmt"
)

// migrations are applied in order; the database's user_version is the
// number already applied. Append new steps, never edit a released one.
var migrations = []string{
	// 1: the initial schema.
	`
CREATE TABLE users (
	id            TEXT PRIMARY KEY,
	email         TEXT NOT NULL UNIQUE,
	name          TEXT NOT NULL,
	password_hash TEXT NOT NULL,
	created_at    INTEGER NOT NULL
) STRICT;

CREATE TABLE api_keys (
	id         TEXT PRIMARY KEY,
	user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
	name       TEXT NOT NULL,
	prefix     TEXT NOT NULL,
	hash       TEXT NOT NULL UNIQUE,
	created_at INTEGER NOT NULL
) STRICT;
CREATE INDEX api_keys_user ON api_keys (user_id, id);

CREATE TABLE sessions (
	id           TEXT PRIMARY KEY,
	user_id      TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
	refresh_hash TEXT NOT NULL,
	created_at   INTEGER NOT NULL,
	expires_at   INTEGER NOT NULL
) STRICT;
CREATE INDEX sessions_user ON sessions (user_id);

CREATE TABLE workflows (
	id          TEXT PRIMARY KEY,
	user_id     TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
	name        TEXT NOT NULL,
	description TEXT NOT NULL,
	version     INTEGER NOT NULL,
	created_at  INTEGER NOT NULL,
	updated_at  INTEGER NOT NULL,
	deleted     INTEGER NOT NULL DEFAULT 0
) STRICT;
-- Listings walk live workflows of one user by id, newest first.
CREATE INDEX workflows_user_live ON workflows (user_id, id) WHERE deleted = 0;

CREATE TABLE workflow_versions (
	workflow_id TEXT NOT NULL REFERENCES workflows (id) ON DELETE CASCADE,
	version     INTEGER NOT NULL,
	name        TEXT NOT NULL,
	description TEXT NOT NULL,
	definition  TEXT NOT NULL,
	created_at  INTEGER NOT NULL,
	PRIMARY KEY (workflow_id, version)
) STRICT, WITHOUT ROWID;
`,
	// 2: executions, their node states and logs. No foreign key to users:
	// the mongo store cannot check one either, and the engine writes
	// executions for callers it has already authenticated.
	`
CREATE TABLE executions (
	id               TEXT PRIMARY KEY,
	user_id          TEXT NOT NULL,
	workflow_id      TEXT NOT NULL,
	workflow_version INTEGER NOT NULL,
	status           TEXT NOT NULL,
	inputs           TEXT NOT NULL,
	output           TEXT,
	error            TEXT,
	idempotency_key  TEXT NOT NULL DEFAULT '',
	created_at       INTEGER NOT NULL,
	started_at       INTEGER,
	finished_at      INTEGER
) STRICT;
-- A key is unique per user; most executions have none.
CREATE UNIQUE INDEX executions_idempotency ON executions (user_id, idempotency_key)
	WHERE idempotency_key <> '';
-- Listings: all of a user's executions, or those of one workflow, or those
-- in one status, newest (highest id) first.
CREATE INDEX executions_user ON executions (user_id, id);
CREATE INDEX executions_user_workflow ON executions (user_id, workflow_id, id);
CREATE INDEX executions_user_status ON executions (user_id, status, id);
-- The reconciler's work list. Partial, so it holds only the executions in
-- flight (a few) rather than every execution ever run, and a finishing
-- execution leaves it.
CREATE INDEX executions_unfinished ON executions (created_at, id)
	WHERE status IN ('queued', 'running');

CREATE TABLE execution_nodes (
	execution_id TEXT NOT NULL REFERENCES executions (id) ON DELETE CASCADE,
	node_id      TEXT NOT NULL,
	type         TEXT NOT NULL,
	status       TEXT NOT NULL,
	attempts     INTEGER NOT NULL,
	started_at   INTEGER,
	finished_at  INTEGER,
	output       TEXT,
	error        TEXT,
	PRIMARY KEY (execution_id, node_id)
) STRICT, WITHOUT ROWID;

-- seq (the rowid) keeps lines in the order they were appended.
CREATE TABLE execution_logs (
	seq          INTEGER PRIMARY KEY,
	execution_id TEXT NOT NULL REFERENCES executions (id) ON DELETE CASCADE,
	node_id      TEXT NOT NULL,
	at           INTEGER NOT NULL,
	level        TEXT NOT NULL,
	message      TEXT NOT NULL
) STRICT;
CREATE INDEX execution_logs_execution ON execution_logs (execution_id, at, seq);
`,
	// 3: the DATABASE node's per-user data space. A document is one row of
	// JSON keyed by its owner, collection and _id; insert_key is the
	// idempotency key of the insert that stored it, so a redelivered insert
	// can tell its own document from another's. data_writes keeps each
	// write's result by (user, idempotency key), written in the same
	// transaction as the write, so a redelivery returns it instead of
	// applying the write again. Not WITHOUT ROWID: documents may be large.
	`
CREATE TABLE data_documents (
	user_id    TEXT NOT NULL,
	collection TEXT NOT NULL,
	id         TEXT NOT NULL,
	doc        TEXT NOT NULL,
	insert_key TEXT NOT NULL DEFAULT '',
	PRIMARY KEY (user_id, collection, id)
) STRICT;

CREATE TABLE data_writes (
	user_id TEXT NOT NULL,
	op_key  TEXT NOT NULL,
	result  TEXT NOT NULL,
	at      INTEGER NOT NULL,
	PRIMARY KEY (user_id, op_key)
) STRICT;
-- Old results are pruned by age.
CREATE INDEX data_writes_at ON data_writes (at);
`,
	// 4: the node states of an execution recorded only once it had ended
	// (a fast execution its starter ran whole) are kept in its own row, as
	// one JSON object by node id, instead of a row each in
	// execution_nodes: an ended execution's nodes never change, and one
	// column costs a fraction of five index entries.
	`
ALTER TABLE executions ADD COLUMN nodes TEXT;
`,
}

// migrate brings the schema up to date in one transaction, so a failed
// step leaves the database as it was.
func migrate(ctx context.Context, db *sql.DB) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("sqlite: migrate: %w", err)
	}
	defer func() { _ = tx.Rollback() }()

	var applied int
	if err := tx.QueryRowContext(ctx, `PRAGMA user_version`).Scan(&applied); err != nil {
		return fmt.Errorf("sqlite: migrate: read user_version: %w", err)
	}
	if applied > len(migrations) {
		return fmt.Errorf("sqlite: migrate: database is at schema version %d, newer than this binary (%d)", applied, len(migrations))
	}
	for i := applied; i < len(migrations); i++ {
		if _, err := tx.ExecContext(ctx, migrations[i]); err != nil {
			return fmt.Errorf("sqlite: migrate: step %d: %w", i+1, err)
		}
	}
	if applied == len(migrations) {
		return nil
	}
	// PRAGMA takes no bound parameters; the value is our own integer.
	if _, err := tx.ExecContext(ctx, fmt.Sprintf(`PRAGMA user_version = %d`, len(migrations))); err != nil {
		return fmt.Errorf("sqlite: migrate: set user_version: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("sqlite: migrate: %w", err)
	}
	return nil
}
