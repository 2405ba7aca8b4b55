// Package workers is Weft's execution engine. Every process that runs the
// workers role runs the starter (it takes submissions off WEFT_SUBMIT) and
// a pool per node type it was given (tasks off WEFT_TASKS); any number of
// processes share the same durable consumers.
//
//	submit ─▶ starter ─┬─ pure nodes run inline ─┐
//	                   └─ task per effectful node ─▶ pool of that type ─┐
//	                                                   │                │
//	        store ◀── one ExecutionUpdate per step ────┴── successors ◀─┘
//	        WEFT_EVENTS ◀── started / node / completed|failed|cancelled
//
// One step of an execution: load its state, run the node a task names (or
// none, for a start), then advance: every node whose predecessors are all
// resolved is skipped (no taken edge into it), run inline (pure nodes), or
// sent as a task (nodes with side effects). The step's writes go to the
// store in one idempotent update; only then are tasks and events published
// (with Nats-Msg-Id) and the message acked. A redelivered message finds
// its node recorded and only advances, so a node's result is recorded once
// and its successors are scheduled once, whatever JetStream redelivers.
package workers
