package module

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"os"
	"sync"

	"github.com/acsproxy/caddy-acs-hmac/signer"
)

// DefaultMaxBodySize is the default max_body_size: ACS email with attachments
// is large.
const DefaultMaxBodySize = 32 << 20

// spoolThreshold is the body size above which a body is spooled to a
// temporary file instead of held in memory, so memory stays flat in body
// size: 64 concurrent 8 MiB uploads cost 64 copy buffers, not 512 MiB. It is
// low enough that 64 concurrent bodies just under it stay small too (1 MiB
// each held 200 MiB of heap in the bench), and high enough that ordinary ACS
// calls (SMS, chat, email without attachments) never touch the disk.
var spoolThreshold int64 = 256 << 10

var (
	// errBodyTooLarge means the body is larger than max_body_size.
	errBodyTooLarge = errors.New("request body is larger than max_body_size")
	// errSpool means the body could not be written to a temporary file.
	errSpool = errors.New("request body could not be buffered to a temporary file")
)

// bufferedBody is a request body read in full, with its content hash. It is
// read once per request and replayed for every attempt: from memory, or from
// an unlinked temporary file for large bodies.
type bufferedBody struct {
	data []byte   // the body, when held in memory
	file *os.File // the body, when spooled; already unlinked, so closing it frees the space
	size int64
	hash string // x-ms-content-sha256 of the body

	closeOnce sync.Once
}

// reader returns a new reader over the whole body. Readers are independent:
// each attempt (and a 401 replay) gets its own.
func (b *bufferedBody) reader() io.Reader {
	if b.file != nil {
		return io.NewSectionReader(b.file, 0, b.size)
	}
	return bytes.NewReader(b.data)
}

// close releases the temporary file, if any. Safe to call more than once.
func (b *bufferedBody) close() {
	if b.file != nil {
		b.closeOnce.Do(func() { _ = b.file.Close() })
	}
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
// contentLength already says so). Bodies up to spoolThreshold are held in a
// buffer sized from contentLength, copied exactly once; larger ones are
// hashed while being written to a temporary file. The caller must close the
// result.
func readBody(body io.Reader, contentLength, max int64) (*bufferedBody, error) {
	if contentLength > max {
		return nil, errBodyTooLarge
	}
	if body == nil || body == http.NoBody {
		return emptyBody, nil
	}
	h := hashers.Get().(hash.Hash)
	h.Reset()
	defer hashers.Put(h)
	if contentLength > spoolThreshold {
		return spool(body, nil, h, max)
	}
	// In memory. One byte more than expected lets the final read see EOF
	// without growing.
	limit := min(max, spoolThreshold) + 1
	size := contentLength + 1
	if contentLength < 0 {
		size = min(limit, 32<<10)
	}
	buf := make([]byte, 0, size)
	for {
		if len(buf) == cap(buf) {
			if int64(len(buf)) >= limit {
				if max <= spoolThreshold {
					return nil, errBodyTooLarge
				}
				// Unknown or understated length, past the threshold.
				return spool(body, buf, h, max)
			}
			// Double, but never allocate past the limit (append's own growth
			// would overshoot it).
			grown := make([]byte, len(buf), min(2*int64(cap(buf)), limit))
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
			return nil, bodyReadErr(err)
		}
	}
	return &bufferedBody{data: buf, size: int64(len(buf)), hash: contentHash(h)}, nil
}

// emptyBody is every empty body: immutable, nothing to release.
var emptyBody = &bufferedBody{hash: signer.EmptyContentHash}

// hashers are SHA-256 states for hashing bodies, reused across requests.
var hashers = sync.Pool{New: func() any { return sha256.New() }}

// copyBufs are the buffers bodies are spooled through.
var copyBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// spool writes head (already hashed) and the rest of body to an unlinked
// temporary file, hashing as it goes. The file is removed from the directory
// at once, so it disappears on every path, a crash included; its space is
// freed when the result is closed.
func spool(body io.Reader, head []byte, h hash.Hash, max int64) (*bufferedBody, error) {
	f, err := os.CreateTemp("", "caddy-acs-hmac-body-*")
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errSpool, err)
	}
	_ = os.Remove(f.Name())
	b := &bufferedBody{file: f}
	ok := false
	defer func() {
		if !ok {
			b.close()
		}
	}()
	if _, err := f.Write(head); err != nil {
		return nil, fmt.Errorf("%w: %w", errSpool, err)
	}
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	buf := *bp
	size := int64(len(head))
	for {
		n, rerr := body.Read(buf)
		if n > 0 {
			size += int64(n)
			if size > max {
				return nil, errBodyTooLarge
			}
			h.Write(buf[:n])
			if _, err := f.Write(buf[:n]); err != nil {
				return nil, fmt.Errorf("%w: %w", errSpool, err)
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return nil, bodyReadErr(rerr)
		}
	}
	b.size, b.hash = size, contentHash(h)
	ok = true
	return b, nil
}

// bodyReadErr maps a failed read of the client's body: a MaxBytesError from
// an earlier request_body handler is a body too large.
func bodyReadErr(err error) error {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return errBodyTooLarge
	}
	return err
}

func contentHash(h hash.Hash) string {
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	return signer.EncodeContentHash(sum)
}
