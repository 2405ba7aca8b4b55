// Package events holds Weft's domain vocabulary: the coded error type, the
// NATS subjects, the message types that travel on them, and the JetStream
// streams and consumers with their settings, declared here in one place.
//
//	weft.executions.submit ─▶ WEFT_SUBMIT (work queue) ─▶ starter
//	weft.tasks.<type>      ─▶ WEFT_TASKS  (work queue) ─▶ tasks-<type>, one durable per node type
//	weft.events.<id>.<kind>─▶ WEFT_EVENTS (limits)     ─▶ projector; waiters and SSE subscribe directly
//	weft.rejected.<why>    ─▶ WEFT_REJECTED (limits)      refused requests, kept for inspection
//	weft.executions.run       core request-reply, served by the ingress
//
// It imports the JetStream client for its configuration types only, and
// nothing of ours, so every other package can import it.
package events
