// Package sqlite is the embedded persistence.Store, Weft's default: one
// SQLite file through the pure-Go modernc.org/sqlite driver, so the binary
// needs no cgo and no server. The file runs in WAL mode with
// synchronous=NORMAL; reads go through a pool of query-only connections
// and never wait for the writer.
//
// Every write goes through one writer goroutine that owns the only write
// connection and commits in groups (writer.go):
//
//	callers ──do(fn)──▶ unbuffered chan ──▶ writer: take all waiting (≤256)
//	                                         BEGIN IMMEDIATE
//	                                         SAVEPOINT; fn; RELEASE  (each)
//	                                         COMMIT ──▶ answer each caller
//
// The writer commits as soon as it is free, with no linger timer: the
// callers that arrive during one commit form the next batch, so batches
// grow with the load and a lone write waits for nothing. A request that
// fails rolls back to its savepoint and does not disturb the rest of its
// batch; if the transaction itself fails, every request of the batch is
// run again alone. Statements are prepared once on the write connection.
// Because there is one writer, every multi-step write (a workflow update
// reading the current version, an execution step checking its status
// before finishing it) is atomic without further locking: racing updates
// come out as consecutive versions, and of racing finishers exactly one
// finishes. Node writes are upserts whose WHERE keeps a final state final,
// so the first terminal write of a node wins.
//
// The schema is a numbered list of migrations applied at Open and tracked
// in PRAGMA user_version; later changes append to the list. Times are
// stored as Unix milliseconds and read back in UTC.
package sqlite
