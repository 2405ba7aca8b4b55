package events

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

const base64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

// TestAdmissionSignatures: signatures are HMAC-SHA256 of the body under
// the key, whichever keys were used before and from however many
// goroutines (the keyed HMACs are reused); a signature under another key,
// of another body, or malformed is refused.
func TestAdmissionSignatures(t *testing.T) {
	keys := [][]byte{SubmissionKey([]byte("one deployment's secret")), SubmissionKey([]byte("another deployment's secret"))}
	want := func(key, body []byte) string {
		m := hmac.New(sha256.New, key)
		m.Write(body)
		return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				key, other := keys[(g+i)%2], keys[(g+i+1)%2]
				body := fmt.Appendf(nil, `{"executionId":"%d-%d"}`, g, i)
				sig := SignAdmission(key, body)
				if sig != want(key, body) {
					t.Errorf("goroutine %d, body %d: %s, want %s", g, i, sig, want(key, body))
					return
				}
				if !VerifyAdmission(key, body, sig) || VerifyAdmission(other, body, sig) ||
					VerifyAdmission(key, append(body, ' '), sig) {
					t.Errorf("goroutine %d, body %d: verified wrongly", g, i)
					return
				}
			}
		})
	}
	wg.Wait()
	body := []byte(`{}`)
	sig := SignAdmission(keys[0], body)
	// The last character's spare bits flipped: the same bytes to a lax
	// decoder, another spelling to a strict one.
	last := sig[len(sig)-1]
	i := strings.IndexByte(base64URL, last)
	flipped := sig[:len(sig)-1] + string(base64URL[i^1])
	for _, bad := range []string{"", "!", sig[:len(sig)-1], sig + "A", sig + sig, flipped,
		sig[:20] + "\r" + sig[20:42], sig[:20] + "\n" + sig[20:42]} {
		require.False(t, VerifyAdmission(keys[0], body, bad), "%q", bad)
	}
	// A body whose MAC ends in a zero byte: a signature one byte short,
	// padded with a line break, would match it to a lax check.
	for n := 0; ; n++ {
		b := fmt.Appendf(nil, `{"n":%d}`, n)
		m := hmac.New(sha256.New, keys[0])
		m.Write(b)
		if sum := m.Sum(nil); sum[31] == 0 {
			s := SignAdmission(keys[0], b)
			require.True(t, VerifyAdmission(keys[0], b, s))
			require.False(t, VerifyAdmission(keys[0], b, s[:20]+"\n"+s[20:42]), "one byte short")
			break
		}
	}
	require.False(t, VerifyAdmission(nil, body, sig), "no key, no admission")
}
