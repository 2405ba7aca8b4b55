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

func TestUTF8PathNamesTheString(t *testing.T) {
	for body, want := range map[string]string{
		`{"password":"a` + "\xff" + `"}`:                 "password",
		`{"a":1,"b":{"c":[true,"x","` + "\xfe" + `"]}}`:  "b.c[2]",
		`{"a":{"` + "\xc3" + `":1}}`:                     "a.\ufffd",
		`{"a":[{"b":1},{"c":"` + "\xff" + `"}],"d":"e"}`: "a[1].c",
		`["` + "\xff" + `"]`:                             "[0]",
		`{"a":"b","c":"` + "\xed\xa0\x80" + `"}`:         "c",
		`{"x":"ok"} "` + "\xff":                          "",
	} {
		err := checkUTF8([]byte(body))
		require.Error(t, err, body)
		require.Equal(t, want, utf8Path([]byte(body), firstInvalidUTF8([]byte(body))), body)
	}
	require.NoError(t, checkUTF8([]byte(`{"a":"héllo ☃"}`)))
}
