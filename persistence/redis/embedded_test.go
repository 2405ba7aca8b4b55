package redis

import (
	"reflect"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"
)

// versions counts the key versions miniredis remembers in database 0.
func versions(t *testing.T, e *Embedded) int {
	t.Helper()
	e.m.Lock()
	defer e.m.Unlock()
	db := reflect.ValueOf(e.m).Elem().FieldByName("dbs").MapIndex(reflect.ValueOf(0))
	require.True(t, db.IsValid(), "miniredis has no database 0")
	v, ok := mapField[uint](db.Elem(), "keyVersion")
	require.True(t, ok, "miniredis no longer has the keyVersion field the prune relies on")
	return len(v)
}

func TestEmbeddedForgetsDeletedKeys(t *testing.T) {
	t.Parallel()
	e, err := StartEmbedded("127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(e.Close)

	// A stream of short-lived keys, as the dashboard's per-execution
	// phases are, and a few that stay.
	for i := range 1000 {
		k := "gone:" + strconv.Itoa(i)
		require.NoError(t, e.m.Set(k, "x"))
		e.m.Del(k)
	}
	for i := range 3 {
		require.NoError(t, e.m.Set("kept:"+strconv.Itoa(i), "x"))
	}
	require.GreaterOrEqual(t, versions(t, e), 1003, "miniredis remembers every key it held")

	require.True(t, forgetDeletedKeys(e.m), "the prune found miniredis's fields")
	require.Equal(t, 3, versions(t, e), "only the live keys' versions remain")
	for i := range 3 {
		v, err := e.m.Get("kept:" + strconv.Itoa(i))
		require.NoError(t, err)
		require.Equal(t, "x", v)
	}
}
