package signer

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"strings"
	"sync"
)

// Key is a decoded ACS access key. It is safe for concurrent use and never
// prints its secret: String, GoString and every fmt verb give a redacted form.
//
// A Key precomputes the HMAC inner and outer pads once and keeps a pool of
// ready HMAC states, so signing a request costs one HMAC over the string to
// sign and no key schedule.
type Key struct {
	// secret sits behind a pointer so that fmt, when it cannot call Format
	// (a *Key in an unexported struct field with a verb like %s), prints an
	// address by reflection and never walks into the bytes.
	secret *keyMaterial
	id     string
	macs   sync.Pool // of hash.Hash, each an HMAC-SHA256 keyed with secret
}

type keyMaterial struct{ b []byte }

// ErrKey is wrapped by every error about key material.
var ErrKey = errors.New("acs access key")

// NewKey returns a Key for the decoded key bytes. It copies raw.
func NewKey(raw []byte) (*Key, error) {
	if len(raw) == 0 {
		return nil, fmt.Errorf("%w: empty", ErrKey)
	}
	secret := &keyMaterial{b: append([]byte(nil), raw...)}
	k := &Key{secret: secret}
	// The id lets logs tell keys apart (rotation) without revealing them: a
	// keyed digest of a fixed label, truncated; it cannot be inverted.
	m := hmac.New(sha256.New, secret.b)
	m.Write([]byte("caddy-acs-hmac key id"))
	k.id = base64.RawURLEncoding.EncodeToString(m.Sum(nil)[:6])
	k.macs.New = func() any { return hmac.New(sha256.New, secret.b) }
	return k, nil
}

// ParseKey decodes an access key as the Azure portal shows it: standard
// base64 (padding optional), surrounding white space ignored. Errors never
// contain the input.
func ParseKey(b64 string) (*Key, error) {
	s := strings.TrimSpace(b64)
	if s == "" {
		return nil, fmt.Errorf("%w: empty", ErrKey)
	}
	raw, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		raw, err = base64.RawStdEncoding.DecodeString(strings.TrimRight(s, "="))
	}
	if err != nil {
		// err from encoding/base64 names only an offset, never the data; still,
		// report our own message so no future change can echo the key.
		return nil, fmt.Errorf("%w: not valid base64 (%d characters)", ErrKey, len(s))
	}
	return NewKey(raw)
}

// ID is a short, non-secret fingerprint of the key for logs and metrics, so
// operators can see that a rotation took effect.
func (k *Key) ID() string { return k.id }

// Equal reports whether k and o hold the same secret, in constant time.
func (k *Key) Equal(o *Key) bool {
	if k == nil || o == nil {
		return k == o
	}
	return subtle.ConstantTimeCompare(k.secret.b, o.secret.b) == 1
}

const redacted = "signer.Key{REDACTED}"

func (k *Key) String() string               { return redacted }
func (k *Key) GoString() string             { return redacted }
func (k *Key) Format(f fmt.State, _ rune)   { _, _ = f.Write([]byte(redacted)) }
func (k *Key) MarshalText() ([]byte, error) { return []byte(redacted), nil }

// mac computes HMAC-SHA256(key, msg) into dst[:0] using a pooled state.
func (k *Key) mac(dst []byte, msg []byte) []byte {
	h := k.macs.Get().(hash.Hash)
	h.Reset()
	h.Write(msg)
	dst = h.Sum(dst)
	k.macs.Put(h)
	return dst
}
