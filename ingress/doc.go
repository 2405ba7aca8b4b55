// Package ingress is Weft's HTTP API, built on Fiber: authentication (JWT
// access tokens, single-use refresh tokens, hashed API keys), workflows,
// health, and the middleware every route shares (error shape, body and
// content-type limits, CORS, rate limits in Redis).
//
//	client ──HTTP──▶ Fiber ──▶ auth ──▶ handlers ──▶ persistence.Store
//	                   │                    │
//	                   └── rate limits ─────┴──▶ Redis (caches, limits)
//
// Errors travel as *events.Error and become the contract's error shape
// ({"error":{"code","message","details"}}) only here, at the edge.
package ingress
