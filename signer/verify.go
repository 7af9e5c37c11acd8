package signer

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"net/http"
	"strings"
	"time"
)

// Reasons Verify rejects a request. Each is distinct so a verifier can answer
// as the service does; none carries request data.
var (
	ErrMissingAuth     = errors.New("missing or non-HMAC Authorization header")
	ErrMalformedAuth   = errors.New("malformed HMAC-SHA256 Authorization header")
	ErrMissingDate     = errors.New("missing or invalid x-ms-date header")
	ErrStaleDate       = errors.New("x-ms-date is outside the allowed clock skew")
	ErrContentMismatch = errors.New("Request 'x-ms-content-sha256' differs from generated content hash.")
	ErrBadSignature    = errors.New("signature does not match")
)

// DefaultMaxSkew is the clock skew ACS is generally assumed to allow.
const DefaultMaxSkew = 15 * time.Minute

// Request is what Verify needs to know about a received request.
type Request struct {
	Method       string
	PathAndQuery string // the request-target as received (http.Request.RequestURI)
	Host         string // the Host header as received
	Header       http.Header
	ContentHash  string // ContentHash of the body bytes actually received
}

// Verify checks an ACS HMAC-SHA256 signed request as the service would: the
// Authorization header must name exactly the ACS signed headers, x-ms-date
// must be within maxSkew of now (x-ms-date, or Date when it is absent), the
// x-ms-content-sha256 header must match the received body, and the signature
// must match. maxSkew <= 0 means DefaultMaxSkew.
func (k *Key) Verify(r Request, now time.Time, maxSkew time.Duration) error {
	if maxSkew <= 0 {
		maxSkew = DefaultMaxSkew
	}
	auth := r.Header.Get(HeaderAuthorization)
	scheme, params, ok := strings.Cut(auth, " ")
	if !ok || !strings.EqualFold(scheme, "HMAC-SHA256") {
		return ErrMissingAuth
	}
	sig, err := parseAuthParams(params)
	if err != nil {
		return err
	}

	dateHdr := HeaderDate
	date := r.Header.Get(dateHdr)
	if date == "" {
		dateHdr = "Date"
		date = r.Header.Get(dateHdr)
	}
	t, err := http.ParseTime(date)
	if err != nil {
		return ErrMissingDate
	}
	if d := now.Sub(t); d > maxSkew || d < -maxSkew {
		return ErrStaleDate
	}

	claimed := r.Header.Get(HeaderContentSHA256)
	if r.ContentHash == "" || claimed != r.ContentHash {
		return ErrContentMismatch
	}

	var want [sha256.Size]byte
	k.signature(want[:0], r.Method, r.PathAndQuery, date, r.Host, claimed)
	if !hmac.Equal(sig, want[:]) {
		return ErrBadSignature
	}
	return nil
}

// parseAuthParams parses "SignedHeaders=...&Signature=..." (either order) and
// returns the decoded signature.
func parseAuthParams(params string) ([]byte, error) {
	var signed, sig string
	var haveSigned, haveSig bool
	for part := range strings.SplitSeq(strings.TrimSpace(params), "&") {
		name, val, ok := strings.Cut(part, "=")
		if !ok {
			return nil, ErrMalformedAuth
		}
		switch {
		case strings.EqualFold(name, "SignedHeaders") && !haveSigned:
			signed, haveSigned = val, true
		case strings.EqualFold(name, "Signature") && !haveSig:
			sig, haveSig = val, true
		default:
			return nil, ErrMalformedAuth
		}
	}
	if !haveSigned || !haveSig || !strings.EqualFold(signed, SignedHeaders) {
		return nil, ErrMalformedAuth
	}
	raw, err := base64.StdEncoding.DecodeString(sig)
	if err != nil || len(raw) != sha256.Size {
		return nil, ErrMalformedAuth
	}
	return raw, nil
}
