// Package redis holds what Weft keeps in Redis: caches (sessions, API keys,
// and later workflows and execution status) and rate limits. Redis holds
// only what can be rebuilt from the store, so every caller treats an error
// from here as a cache miss and carries on from the store.
//
// Embedded starts the in-process Redis-protocol server (miniredis) used by
// `weft dev`, with its clock driven by the wall clock so that TTLs expire in
// real time.
package redis
