package webhook

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/google/go-github/v75/github"
)

// errInvalidSignature is every signature failure. The wrapped detail is for
// the operator's log; it never contains the received or expected MAC.
var errInvalidSignature = errors.New("invalid signature")

const sha256Prefix = "sha256="

// verifySignature checks X-Hub-Signature-256 against body under each secret,
// in constant time per secret (go-github's ValidateSignature uses
// hmac.Equal). The SHA-1 header alone is not enough: SHA-1 HMACs are only
// sent for old integrations, and accepting them would be a downgrade.
func verifySignature(h http.Header, body []byte, secrets [][]byte) error {
	sig := h.Get(github.SHA256SignatureHeader)
	if sig == "" {
		if h.Get(github.SHA1SignatureHeader) != "" {
			return fmt.Errorf("%w: only the SHA-1 header X-Hub-Signature was sent", errInvalidSignature)
		}
		return fmt.Errorf("%w: no X-Hub-Signature-256 header", errInvalidSignature)
	}
	// go-github would also accept "sha1=" or "sha512=" in this header.
	if len(sig) != len(sha256Prefix)+64 || !strings.HasPrefix(sig, sha256Prefix) {
		return fmt.Errorf("%w: X-Hub-Signature-256 is not sha256=<64 hex digits>", errInvalidSignature)
	}
	for _, secret := range secrets {
		if github.ValidateSignature(sig, body, secret) == nil {
			return nil
		}
	}
	return fmt.Errorf("%w: no configured secret matches", errInvalidSignature)
}
