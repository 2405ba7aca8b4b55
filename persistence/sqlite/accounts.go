package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"time"

	"github.com/weftdev/weft/events"
	"github.com/weftdev/weft/persistence"
)

// CreateUser stores u; a taken email or id is a conflict.
func (s *Store) CreateUser(ctx context.Context, u *persistence.User) error {
	u.CreatedAt = s.stamp(u.CreatedAt)
	err := s.do(ctx, func(t *wtx) error {
		_, err := t.exec(
			`INSERT INTO users (id, email, name, password_hash, created_at) VALUES (?, ?, ?, ?, ?)`,
			u.ID, u.Email, u.Name, u.PasswordHash, toMillis(u.CreatedAt))
		return err
	})
	if err != nil {
		return constraint(err, "user")
	}
	return nil
}

// UserByEmail finds a user by the exact (already lower-cased) email.
func (s *Store) UserByEmail(ctx context.Context, email string) (*persistence.User, error) {
	return s.user(ctx, `WHERE email = ?`, email)
}

// UserByID finds a user by id.
func (s *Store) UserByID(ctx context.Context, id string) (*persistence.User, error) {
	return s.user(ctx, `WHERE id = ?`, id)
}

func (s *Store) user(ctx context.Context, where string, arg any) (*persistence.User, error) {
	var (
		u       persistence.User
		created int64
	)
	err := s.read.QueryRowContext(ctx,
		`SELECT id, email, name, password_hash, created_at FROM users `+where, arg).
		Scan(&u.ID, &u.Email, &u.Name, &u.PasswordHash, &created)
	if err != nil {
		return nil, notFound(err, "user")
	}
	u.CreatedAt = fromMillis(created)
	return &u, nil
}

// CreateAPIKey stores k; a reused hash or id is a conflict.
func (s *Store) CreateAPIKey(ctx context.Context, k *persistence.APIKey) error {
	k.CreatedAt = s.stamp(k.CreatedAt)
	err := s.do(ctx, func(t *wtx) error {
		_, err := t.exec(
			`INSERT INTO api_keys (id, user_id, name, prefix, hash, created_at) VALUES (?, ?, ?, ?, ?, ?)`,
			k.ID, k.UserID, k.Name, k.Prefix, k.Hash, toMillis(k.CreatedAt))
		return err
	})
	if err != nil {
		return constraint(err, "api key")
	}
	return nil
}

const apiKeyColumns = `id, user_id, name, prefix, hash, created_at`

func scanAPIKey(row interface{ Scan(...any) error }) (persistence.APIKey, error) {
	var (
		k       persistence.APIKey
		created int64
	)
	err := row.Scan(&k.ID, &k.UserID, &k.Name, &k.Prefix, &k.Hash, &created)
	k.CreatedAt = fromMillis(created)
	return k, err
}

// APIKeyByHash finds a key by the hash of its secret.
func (s *Store) APIKeyByHash(ctx context.Context, hash string) (*persistence.APIKey, error) {
	k, err := scanAPIKey(s.read.QueryRowContext(ctx,
		`SELECT `+apiKeyColumns+` FROM api_keys WHERE hash = ?`, hash))
	if err != nil {
		return nil, notFound(err, "api key")
	}
	return &k, nil
}

// ListAPIKeys lists the user's keys, newest (highest id) first.
func (s *Store) ListAPIKeys(ctx context.Context, userID string) ([]persistence.APIKey, error) {
	rows, err := s.read.QueryContext(ctx,
		`SELECT `+apiKeyColumns+` FROM api_keys WHERE user_id = ? ORDER BY id DESC`, userID)
	if err != nil {
		return nil, internal(err)
	}
	defer func() { _ = rows.Close() }()
	keys := []persistence.APIKey{}
	for rows.Next() {
		k, err := scanAPIKey(rows)
		if err != nil {
			return nil, internal(err)
		}
		keys = append(keys, k)
	}
	if err := rows.Err(); err != nil {
		return nil, internal(err)
	}
	return keys, nil
}

// DeleteAPIKey removes the user's key; another user's key is not found.
func (s *Store) DeleteAPIKey(ctx context.Context, userID, id string) error {
	return s.do(ctx, func(t *wtx) error {
		return t.execOne("api key", `DELETE FROM api_keys WHERE id = ? AND user_id = ?`, id, userID)
	})
}

// CreateSession stores a new login.
func (s *Store) CreateSession(ctx context.Context, sess *persistence.Session) error {
	sess.CreatedAt = s.stamp(sess.CreatedAt)
	sess.ExpiresAt = sess.ExpiresAt.UTC().Truncate(time.Millisecond)
	err := s.do(ctx, func(t *wtx) error {
		_, err := t.exec(
			`INSERT INTO sessions (id, user_id, refresh_hash, created_at, expires_at) VALUES (?, ?, ?, ?, ?)`,
			sess.ID, sess.UserID, sess.RefreshHash, toMillis(sess.CreatedAt), toMillis(sess.ExpiresAt))
		return err
	})
	if err != nil {
		return constraint(err, "session")
	}
	return nil
}

// SessionByID finds a session by id.
func (s *Store) SessionByID(ctx context.Context, id string) (*persistence.Session, error) {
	var (
		sess             persistence.Session
		created, expires int64
	)
	err := s.read.QueryRowContext(ctx,
		`SELECT id, user_id, refresh_hash, created_at, expires_at FROM sessions WHERE id = ?`, id).
		Scan(&sess.ID, &sess.UserID, &sess.RefreshHash, &created, &expires)
	if err != nil {
		return nil, notFound(err, "session")
	}
	sess.CreatedAt = fromMillis(created)
	sess.ExpiresAt = fromMillis(expires)
	return &sess, nil
}

// RotateSession swaps the refresh hash with one conditional UPDATE: the
// single writer makes the compare and the set atomic.
func (s *Store) RotateSession(ctx context.Context, id, oldHash, newHash string, expiresAt time.Time) error {
	return s.do(ctx, func(t *wtx) error {
		res, err := t.exec(
			`UPDATE sessions SET refresh_hash = ?, expires_at = ? WHERE id = ? AND refresh_hash = ?`,
			newHash, toMillis(expiresAt), id, oldHash)
		if err != nil {
			return internal(err)
		}
		n, err := res.RowsAffected()
		if err != nil {
			return internal(err)
		}
		if n == 1 {
			return nil
		}
		// Nothing matched: tell a used token from a missing session.
		var one int
		err = t.queryRow(`SELECT 1 FROM sessions WHERE id = ?`, id).Scan(&one)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			return events.Errorf(events.CodeNotFound, "session not found")
		case err != nil:
			return internal(err)
		}
		return events.Errorf(events.CodeConflict, "refresh token already used")
	})
}

// DeleteSession ends a login; a missing session is not found.
func (s *Store) DeleteSession(ctx context.Context, id string) error {
	return s.do(ctx, func(t *wtx) error {
		return t.execOne("session", `DELETE FROM sessions WHERE id = ?`, id)
	})
}
