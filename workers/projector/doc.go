// Package projector keeps the dashboard's per-user counters in Redis,
// built from the WEFT_EVENTS stream, and reads them back for the HTTP API.
//
//	weft.events.<id>.<kind> ─▶ WEFT_EVENTS ─▶ durable "projector" (any number of processes)
//	                                              │ up to 256 events at a time
//	                                              ▼
//	                         WATCH marker + the batch's executions' own keys
//	                         read (one round trip): MGET those keys,
//	                           HMGET the batch's executions in 3 buckets of ended phases
//	                         compute in Go what the batch changes
//	                         MULTI … EXEC (one round trip):
//	                           open phases, one key each  ─ dedupe, gauges
//	                           ended phases, one HSET     ─ dedupe, for DoneTTL
//	                           per-user counters          ─ Overview
//	                           per-workflow counters+hist ─ Workflows
//	                           per-minute buckets (TTL)   ─ Metrics
//	                                              │ EXEC refused (a phase changed
//	                                              │ meanwhile): compute it again
//	                                   ack the batch ◀┘
//
//	Reader (no consumer needed: the ingress reads with it) ─▶ Overview, Workflows, Metrics
//
// # Effectively once, in any order
//
// Every execution has a small phase string in Redis,
// "user|workflow|q|s|t|,node,node,", recording which of queued, started
// (or a node event) and a terminal event it has seen, who it belongs to,
// and which of its nodes were counted. From each phase the projector
// derives what had been counted (queued or running gauge, status
// counter), applies the batch's events of that execution, and moves the
// counters by the difference, summed over the batch. So a redelivered or
// republished event changes nothing, and the counters come out the same
// whatever the order events arrive in.
//
// While an execution is open its phase has a key of its own, kept seven
// days (Config.OpenTTL). Once it has ended, its phase only needs to
// recognise a redelivery (the consumer's AckWait is 2 s) or an event that
// two projectors applied out of order, for Config.DoneTTL (5 s); an
// execution's end is stored once in the stream, so no republish comes
// later. At thousands of executions a second, a key each would be tens of
// thousands of keys with a TTL (which the embedded server visits on every
// tick of its clock) and a command each. So ended phases are fields of a
// hash per bucket of time, DoneTTL wide, by the projector's clock when it
// writes them: a batch writes all of its ended phases with one HSET, and
// deletes the own keys of the executions it ended. A batch reads three
// buckets: the one its clock is in; the one before, so that a phase is
// found for between DoneTTL and twice that after it was last written; and
// the one after, which a projector whose clock runs ahead writes to. A phase
// written again goes to the newest of the buckets it was found in, never
// an older one. A bucket expires two widths after its end, a width after
// the last batch reads it. A projector whose clock is s ahead of
// another's finds the other's phases for DoneTTL − s at least, and a
// redelivery comes after the AckWait plus the time the batch spent in a
// projector's hands: so projectors' clocks must agree with each other and
// with Redis's to well within DoneTTL − AckWait (3 s). All projectors on a
// prefix must have the same DoneTTL: buckets are keyed by their width, so
// projectors of different widths do not see each other's ended phases
// (while a change of DoneTTL rolls out, a redelivery that lands on a
// projector of the other width can be counted again).
//
// An execution's phase may thus be found in more than one place: in an
// older bucket and a newer one, until the older expires (or, from a
// projector of the previous layout, in its own key once ended, which is
// then moved). Flags and nodes are only ever added, and every write of a
// phase starts from all of its copies, so the newest copy holds all the
// others: a batch reads all of them and merges them (flags of any, nodes
// of all), which is the newest copy, and is what was counted.
//
// A batch is applied as one transaction, optimistically: the marker and
// the own key of every execution in the batch are WATCHed, the phases are
// read, and the new phases and every counter increment go in one
// MULTI/EXEC. If another projector changed one of those phases in between,
// EXEC applies nothing and the batch is computed again from the phases as
// they are now (up to ten times, with a short jittered pause; then the
// batch is given back for redelivery). So two projectors on the same
// durable consumer apply their batches in any interleaving, each batch
// wholly after or wholly before the other.
//
// The buckets are not watched: WATCH works per key, and every batch that
// ends an execution writes the current bucket, so watching it would
// refuse the EXEC of any batch while another ended executions, whatever
// executions the two hold. Two batches need to conflict only when they
// change the phase of the same execution, and every change of a phase
// writes that execution's own key: an open phase is SET there; an ended
// one is written to its bucket, and in the same transaction its own key
// is SET and DELeted, two commands for the whole batch (MSET, DEL) that
// leave nothing behind but refuse the EXEC of a batch that watched the
// key.
//
// # Rebuild
//
// Redis holds only what can be rebuilt. A marker key says the counters
// were built from the stream; when it is missing (a FLUSHALL, a new Redis,
// the prefix's keys deleted) no batch is applied (a batch that read the
// marker just before it went has its EXEC refused; on the embedded server
// too, but for a FLUSHALL, which miniredis does not tell WATCH about), and one
// projector (elected by a lock key) deletes what is left under the prefix,
// deletes and recreates the durable consumer so that it delivers the
// stream from its first message, and sets the marker. The counters then
// cover what the stream still holds: events.Settings.EventsMaxAge (7 days
// by default) or EventsMaxBytes, whichever is reached first. Give Redis
// an eviction policy that spares keys without a TTL (noeviction or a
// volatile-* policy): an evicted marker means a rebuild.
//
// On Redis Cluster, put a hash tag in the prefix ("{weft}:"): a batch
// watches and writes keys of many users and executions in one
// transaction, so all of them must share one slot.
//
// # What is counted
//
//   - executions.total counts executions (each once, at its first event
//     carrying a user); queued and running are gauges; completed, failed,
//     cancelled and rejected count terminal events, one per execution.
//   - nodes.total and nodes.byType count node transitions to completed or
//     failed: the nodes that ran. Skipped and cancelled nodes did not run;
//     they are counted in nodes.byStatus only.
//   - workflows counts the distinct workflows a user ran.
//   - avgDurationMs, and the per-workflow and per-window durations, cover
//     terminal events that carry a duration (an execution cancelled while
//     queued has none).
//   - successRate is completed / (completed + failed + cancelled); rejected
//     submissions never ran and are left out.
//
// Percentiles come from a fixed histogram of four buckets per doubling
// (bucket edges 2^(k/4) ms, from 1/16 ms to 2^27 ms, about 37 hours); a
// percentile is reported as its bucket's geometric midpoint, within 9.1 %
// (2^(1/8)) of the true value, clamped at the histogram's ends.
//
// Per-minute buckets are keyed by the minute the execution finished (the
// event's At), so a rebuild writes the same buckets; buckets older than
// the metrics horizon are not written at all.
package projector
