// Package persistence declares the records Weft keeps and the store
// interfaces their adapters satisfy: sqlite/ (the embedded default) and
// mongo/ (production). Both pass the conformance suite in storetest/.
//
// Every lookup of an owned object takes the owner's user id: an object that
// belongs to another user is reported as not found, never as forbidden.
package persistence

import (
	"context"
	"encoding/json"
	"time"
)

// User is a registered account. Email is stored lower-cased and is unique.
type User struct {
	ID           string
	Email        string
	Name         string
	PasswordHash string
	CreatedAt    time.Time
}

// APIKey is a long-lived credential. Only the SHA-256 hash of the secret is
// stored; Prefix is the first characters of the key, shown to help the user
// tell keys apart.
type APIKey struct {
	ID        string
	UserID    string
	Name      string
	Prefix    string
	Hash      string
	CreatedAt time.Time
}

// Session is one login. Access tokens name it; its refresh token (stored as
// a hash) is rotated on every refresh, so each refresh token works once.
type Session struct {
	ID          string
	UserID      string
	RefreshHash string
	CreatedAt   time.Time
	ExpiresAt   time.Time
}

// Workflow is one version of a saved workflow. Definition is the validated
// JSON definition (name, description, nodes, edges) exactly as served.
type Workflow struct {
	ID          string
	UserID      string
	Name        string
	Description string
	Version     int
	Definition  json.RawMessage
	CreatedAt   time.Time // when version 1 was saved
	UpdatedAt   time.Time // when this version was saved
}

// Page asks for one page of a listing, newest first. Cursor is the
// NextCursor of the previous page, or "" for the first.
type Page struct {
	Limit  int
	Cursor string
}

// Users keeps accounts.
type Users interface {
	// CreateUser stores u; a taken email is a conflict.
	CreateUser(ctx context.Context, u *User) error
	UserByEmail(ctx context.Context, email string) (*User, error)
	UserByID(ctx context.Context, id string) (*User, error)
}

// APIKeys keeps hashed API keys.
type APIKeys interface {
	CreateAPIKey(ctx context.Context, k *APIKey) error
	// APIKeyByHash finds a live key by the hash of its secret.
	APIKeyByHash(ctx context.Context, hash string) (*APIKey, error)
	// ListAPIKeys lists the user's live keys, newest first.
	ListAPIKeys(ctx context.Context, userID string) ([]APIKey, error)
	// DeleteAPIKey revokes the key; another user's key is not found.
	DeleteAPIKey(ctx context.Context, userID, id string) error
}

// Sessions keeps logins and their single-use refresh tokens.
type Sessions interface {
	CreateSession(ctx context.Context, s *Session) error
	SessionByID(ctx context.Context, id string) (*Session, error)
	// RotateSession swaps the refresh hash from oldHash to newHash and sets a
	// new expiry, atomically: when the stored hash is not oldHash (the token
	// was already used) it is a conflict and nothing changes.
	RotateSession(ctx context.Context, id, oldHash, newHash string, expiresAt time.Time) error
	DeleteSession(ctx context.Context, id string) error
}

// Workflows keeps workflows and every version of them.
type Workflows interface {
	// CreateWorkflow stores w as version 1 (w.Version is set to 1).
	CreateWorkflow(ctx context.Context, w *Workflow) error
	// GetWorkflow returns the latest version of a live workflow.
	GetWorkflow(ctx context.Context, userID, id string) (*Workflow, error)
	// GetWorkflowVersion returns one version; versions stay readable after
	// the workflow is deleted, for the executions that ran them.
	GetWorkflowVersion(ctx context.Context, userID, id string, version int) (*Workflow, error)
	// UpdateWorkflow stores w's name, description and definition as the next
	// version of a live workflow and sets w.Version, w.CreatedAt and
	// w.UpdatedAt. Two racing updates both land, as consecutive versions.
	UpdateWorkflow(ctx context.Context, w *Workflow) error
	// ListWorkflows lists the latest versions of live workflows, newest
	// first (by ID, which is time-ordered), with the cursor of the next
	// page ("" when there is none).
	ListWorkflows(ctx context.Context, userID string, p Page) ([]Workflow, string, error)
	// DeleteWorkflow removes a live workflow from listings and lookups.
	DeleteWorkflow(ctx context.Context, userID, id string) error
}

// Store is everything an adapter provides.
type Store interface {
	Users
	APIKeys
	Sessions
	Workflows
	Executions
	DataStore
	// Ping checks that the store answers.
	Ping(ctx context.Context) error
	Close() error
}
