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
package mongo
