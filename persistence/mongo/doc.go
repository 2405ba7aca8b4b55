// Package mongo is the MongoDB persistence.Store, for production. It runs
// unchanged against MongoDB and FerretDB v1, so it relies only on what both
// provide atomically: inserting a document whose _id (or unique index key)
// is taken fails. It uses no transactions, no TTL indexes and no change
// streams, and it does not trust a conditional update to be a
// compare-and-set, because FerretDB v1 executes an update as a read
// followed by a whole-document replace. A workflow's history is therefore
// append-only: version v lives in workflowVersions under _id
// "<workflowId>:<v>", and an update claims the next number by inserting it;
// a racing writer that loses the insert re-reads and claims the one after,
// so concurrent updates land as consecutive versions. Deletion appends a
// tombstone the same way. The workflows document is only a cached copy of
// the newest entry, written after that entry exists; because it can lag
// (a crash between the two writes, or a stale replace on FerretDB), every
// read also looks up the entry after it and rolls the cache forward when
// one exists. Refresh tokens are spent the same way: RotateSession inserts
// "<sessionId>:<oldHash>" into usedRefreshHashes, which only one caller
// can do, before it moves the session to the new hash. Times are BSON
// dates: milliseconds, read back in UTC.
//
// Executions follow the same rule, facts are inserted once and documents
// that can be rebuilt are only caches:
//
//	executions       _id = id; the execution, its status a cache once final
//	executionKeys    _id = "<userId>:<idempotencyKey>" → executionId, plus a
//	                 copy of the execution so a loser can finish a stopped
//	                 create; claimed before the execution is inserted
//	executionFinals  _id = executionId; how it ended. Inserting it is the
//	                 finish: of racing finishers exactly one succeeds and
//	                 reports Finished; then it is copied onto executions
//	executionNodes   _id = "<executionId>:<nodeId>:p", the latest non-final
//	                 state, replaced freely; "<executionId>:<nodeId>:t", the
//	                 final state, inserted once: the first terminal write
//	                 wins and a later running write cannot hide it
//	executionLogs    one document per line, ObjectID made here
//
// A read that finds an execution still queued or running looks up its
// final and, when there is one, shows it and copies it back (a finisher
// may have stopped before copying, and on FerretDB a racing start's
// replace may have undone the copy). Listings by a final status read the
// finals, which are exact. An ExecutionUpdate is applied in the order
// start, nodes, logs, finish, so an execution seen finished has its nodes;
// every part is idempotent, so a caller that fails halfway applies the
// whole update again. Multi-document writes go in batches of at most 40:
// FerretDB v1 hangs on update commands of 50 statements or more.
package mongo
