package events

import (
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
)

// TestLocalResultsHandOverACopy: the receiver's message keeps its data when
// the buffer the result was built in is written again.
func TestLocalResultsHandOverACopy(t *testing.T) {
	var l LocalResults
	require.False(t, l.Receiving())
	var got *nats.Msg
	l.Receive(func(m *nats.Msg) { got = m })
	require.True(t, l.Receiving())

	m := nats.NewMsg(ResultSubject("x1"))
	m.Header.Set(HeaderExecutionAt, "5")
	m.Data = []byte(`{"a":{"b":1}}`)
	l.deliver(m)
	copy(m.Data, `XXXXXXXXXXXXX`)
	require.Equal(t, `{"a":{"b":1}}`, string(got.Data))
	require.Equal(t, m.Subject, got.Subject)
	require.Equal(t, "5", got.Header.Get(HeaderExecutionAt))

	l.Receive(nil)
	require.False(t, l.Receiving())
	got = nil
	l.deliver(m)
	require.Nil(t, got)
	var none *LocalResults
	none.deliver(m) // no hub: nothing, and no panic
}
