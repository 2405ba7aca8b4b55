package ingress

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestRetryAfterRoundsUp(t *testing.T) {
	for wait, want := range map[time.Duration]int{
		0:                                     1,
		time.Millisecond:                      1,
		time.Second:                           1,
		time.Second + 1:                       2,
		1400 * time.Millisecond:               2,
		11*time.Second + 900*time.Millisecond: 12,
		12 * time.Second:                      12,
	} {
		require.Equal(t, want, retryAfter(wait), wait.String())
	}
}
