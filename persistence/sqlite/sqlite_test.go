package sqlite_test

import (
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/weftdev/weft/persistence"
	"github.com/weftdev/weft/persistence/sqlite"
	"github.com/weftdev/weft/persistence/storetest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func open(t *testing.T) *sqlite.Store {
	t.Helper()
	s, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "weft.db"))
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, s.Close()) })
	return s
}

func TestStore(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(t *testing.T) persistence.Store { return open(t) })
}

// TestReopen checks that opening an existing file keeps its data and does
// not re-run migrations.
func TestReopen(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "weft.db")
	s, err := sqlite.Open(ctx, path)
	require.NoError(t, err)
	require.NoError(t, s.CreateUser(ctx, &persistence.User{ID: "01JREOPEN", Email: "ann@example.com"}))
	require.NoError(t, s.Close())

	s, err = sqlite.Open(ctx, path)
	require.NoError(t, err)
	defer func() { require.NoError(t, s.Close()) }()
	u, err := s.UserByEmail(ctx, "ann@example.com")
	require.NoError(t, err)
	require.Equal(t, "01JREOPEN", u.ID)
}
