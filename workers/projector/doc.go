// Package projector keeps the dashboard's per-user counters in Redis,
// built from the WEFT_EVENTS stream, and reads them back for the HTTP API.
//
//	weft.events.<id>.<kind> ─▶ WEFT_EVENTS ─▶ durable "projector" (any number of processes)
//	                                              │ up to 256 events at a time
//	                                              ▼
//	                         WATCH marker + the batch's phases; MGET them
//	                         compute in Go what the batch changes
//	                         MULTI … EXEC (one round trip):
//	                           per-execution phase       ─ dedupe, gauges
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
// and which of its nodes were counted; a batch reads all of its phases in
// one MGET. From each phase the projector derives what had been counted
// (queued or running gauge, status counter), applies the batch's events
// of that execution, and moves the counters by the difference, summed
// over the batch. So a redelivered or republished event changes nothing,
// and the counters come out the same whatever the order events arrive in.
//
// A batch is applied as one transaction, optimistically: the phases it
// read (and the marker) are WATCHed, and the new phases and every counter
// increment go in one MULTI/EXEC. If another projector changed one of
// those phases in between, EXEC applies nothing and the batch is computed
// again from the phases as they are now (up to ten times, with a short
// jittered pause; then the batch is given back for redelivery). So two
// projectors on the same durable consumer apply their batches in any
// interleaving, each batch wholly after or wholly before the other. The phase
// lives seven days while the execution is open (Config.OpenTTL) and 10 s
// once it has ended (Config.DoneTTL): longer than the consumer's AckWait
// (5 s), so a redelivered batch is recognised, and longer than two
// projectors' batches can be out of order; short enough that thousands of
// executions a second do not fill Redis. An execution's end is stored once
// in the stream, so no republish comes later.
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
