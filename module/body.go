package module

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/acsproxy/caddy-acs-hmac/signer"
)

// DefaultMaxBodySize is the default max_body_size: ACS email with attachments
// is large.
const DefaultMaxBodySize = 32 << 20

// errBodyTooLarge means the body is larger than max_body_size.
var errBodyTooLarge = errors.New("request body is larger than max_body_size")

// bufferedBody is a request body read in full, with its content hash. It is
// read once per request and replayed for every attempt.
type bufferedBody struct {
	data []byte
	hash string // x-ms-content-sha256 of data
}

// String keeps the body out of anything that formats it (a {http.vars.*}
// placeholder in a log format, a debug print).
func (*bufferedBody) String() string { return bodyWithheld }

// GoString keeps the body out of %#v.
func (*bufferedBody) GoString() string { return bodyWithheld }

// Format keeps the body out of every other verb.
func (*bufferedBody) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, bodyWithheld) }

const bodyWithheld = "[request body withheld]"

// readBody reads body in full, hashing as it reads, and fails with
// errBodyTooLarge as soon as more than max bytes arrive (or at once, when
// contentLength already says so). It copies the body exactly once: into a
// buffer sized from contentLength when it is known.
func readBody(body io.Reader, contentLength, max int64) (*bufferedBody, error) {
	if contentLength > max {
		return nil, errBodyTooLarge
	}
	if body == nil || body == http.NoBody {
		return &bufferedBody{hash: signer.EmptyContentHash}, nil
	}
	// One byte more than expected lets the final read see EOF without growing.
	size := contentLength + 1
	if contentLength < 0 {
		size = min(max+1, 32<<10)
	}
	buf := make([]byte, 0, size)
	h := sha256.New()
	for {
		if len(buf) == cap(buf) {
			// Unknown or understated length: double, but never allocate past
			// max+1 (append's own growth would overshoot the limit).
			grown := make([]byte, len(buf), min(2*int64(cap(buf)), max+1))
			copy(grown, buf)
			buf = grown
		}
		n, err := body.Read(buf[len(buf):cap(buf)])
		h.Write(buf[len(buf) : len(buf)+n])
		buf = buf[:len(buf)+n]
		if int64(len(buf)) > max {
			return nil, errBodyTooLarge
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				return nil, errBodyTooLarge
			}
			return nil, err
		}
	}
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	return &bufferedBody{data: buf, hash: signer.EncodeContentHash(sum)}, nil
}
