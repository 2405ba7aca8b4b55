// Package sqlite is the embedded persistence.Store, Weft's default: one
// SQLite file through the pure-Go modernc.org/sqlite driver, so the binary
// needs no cgo and no server. The file runs in WAL mode with
// synchronous=NORMAL; writes go through a handle limited to a single
// connection, and reads through a separate pool of query-only connections,
// so concurrent requests queue in Go instead of failing with SQLITE_BUSY
// and readers never wait for the writer. Because there is only one writer,
// every multi-step write (a workflow update reading the current version,
// inserting the next version row and moving the head) is one IMMEDIATE
// transaction, and racing updates come out as consecutive versions. The
// schema is a numbered list of migrations applied at Open and tracked in
// PRAGMA user_version; later changes append to the list. Times are stored
// as Unix milliseconds and read back in UTC.
package sqlite
