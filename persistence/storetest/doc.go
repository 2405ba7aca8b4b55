// Package storetest is the conformance suite every persistence.Store
// adapter passes, so that the embedded SQLite store and the MongoDB store
// behave the same to the rest of Weft. An adapter's test calls Run with a
// function that opens a fresh, empty store; each case gets its own store
// and two users, runs in parallel, and checks behaviour through the
// interface only: coded errors (not found, conflict), ownership (another
// user's object is not found), version history, cursor pagination, time
// precision (milliseconds, UTC) and the races the interface promises to
// survive (one winner among replayed refresh tokens; concurrent workflow
// updates landing as consecutive versions; racing creates with one
// idempotency key, racing terminal node writes and racing finishers each
// with exactly one winner). Data is kept small because FerretDB, which the
// mongo adapter is tested against, scans whole collections.
package storetest
