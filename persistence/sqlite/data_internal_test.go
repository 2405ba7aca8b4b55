package sqlite

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/weftdev/weft/events"
	"github.com/weftdev/weft/persistence"
)

// TestDataErrStatementTooLarge: a statement SQLite refuses for its size
// (the plan's bounds keep filters under SQLite's limits; this is the
// backstop) is db_invalid, not an outage to retry, whether it failed on a
// reader or, wrapped, in the writer.
func TestDataErrStatementTooLarge(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s, err := Open(ctx, t.TempDir()+"/weft.db")
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, s.Close()) })

	deep := "SELECT 1 WHERE " + strings.Repeat("0 OR ", 1100) + "1"
	vars := "SELECT 1 WHERE 0 IN (" + strings.TrimSuffix(strings.Repeat("?,", 40000), ",") + ")"
	args := make([]any, 40000)
	for i := range args {
		args[i] = i + 1
	}
	for _, tc := range []struct {
		query string
		args  []any
		cause string
	}{
		{deep, nil, "too large"},
		{vars, args, "too many SQL variables"},
	} {
		_, err := s.read.ExecContext(ctx, tc.query, tc.args...)
		require.ErrorContains(t, err, tc.cause)
		for _, err := range []error{err, internal(err)} {
			got := dataErr(ctx, err)
			require.Equal(t, persistence.CodeDataInvalid, events.ErrorCode(got), "%v", got)
			require.True(t, errors.Is(got, err), "the cause stays in the chain")
		}
	}
	// Other failures stay internal.
	_, err = s.read.ExecContext(ctx, "SELECT * FROM no_such_table")
	require.Error(t, err)
	require.Equal(t, events.CodeInternal, events.ErrorCode(dataErr(context.Background(), err)))
}
