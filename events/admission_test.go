package events

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

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
	for _, bad := range []string{"", "!", sig[:len(sig)-1], sig + "A", sig + sig} {
		require.False(t, VerifyAdmission(keys[0], body, bad), "%q", bad)
	}
	require.False(t, VerifyAdmission(nil, body, sig), "no key, no admission")
}
