// Package signer implements the HMAC-SHA256 request signing that Azure
// Communication Services (ACS) accepts for access-key authentication, and its
// verification. It uses only the standard library.
//
// The string to sign is
//
//	METHOD + "\n" + path_and_query + "\n" + date + ";" + host + ";" + content_hash
//
// where content_hash is the base64 SHA-256 of the exact body bytes sent and date
// is RFC 1123 in GMT. The three resulting headers are x-ms-date,
// x-ms-content-sha256 and Authorization.
package signer

import (
	"crypto/sha256"
	"encoding/base64"
	"net/http"
	"sync"
	"time"
)

// Header names and fixed values of the ACS scheme.
const (
	HeaderDate          = "X-Ms-Date"           // canonical form of x-ms-date
	HeaderContentSHA256 = "X-Ms-Content-Sha256" // canonical form of x-ms-content-sha256
	HeaderAuthorization = "Authorization"

	// SignedHeaders is the fixed list every ACS SDK signs.
	SignedHeaders = "x-ms-date;host;x-ms-content-sha256"

	// EmptyContentHash is ContentHash(nil).
	EmptyContentHash = "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="

	authPrefix = "HMAC-SHA256 SignedHeaders=" + SignedHeaders + "&Signature="
	authLen    = len(authPrefix) + (sha256.Size+2)/3*4 // prefix + base64 of the MAC
)

// ContentHash returns base64(SHA-256(body)), the x-ms-content-sha256 value.
func ContentHash(body []byte) string {
	sum := sha256.Sum256(body)
	return EncodeContentHash(sum)
}

// EncodeContentHash encodes a SHA-256 digest computed elsewhere (for example
// while streaming a body) as an x-ms-content-sha256 value.
func EncodeContentHash(sum [sha256.Size]byte) string {
	return base64.StdEncoding.EncodeToString(sum[:])
}

// FormatDate formats t as the x-ms-date value: RFC 1123, GMT, English names.
func FormatDate(t time.Time) string {
	return t.UTC().Format(http.TimeFormat)
}

// StringToSign returns the exact string that is signed. It is exported for
// diagnostics and tests; it contains no secret, but it describes the request
// and should not be logged in production.
func StringToSign(method, pathAndQuery, date, host, contentHash string) string {
	return string(appendStringToSign(nil, method, pathAndQuery, date, host, contentHash))
}

// bufPool holds scratch buffers for the string to sign; requests are small,
// so buffers stay small.
var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// appendStringToSign is StringToSign without the allocation. The method is
// upper-cased in ASCII only: HTTP methods are tokens, and the SDKs do the same.
func appendStringToSign(dst []byte, method, pathAndQuery, date, host, contentHash string) []byte {
	for i := 0; i < len(method); i++ {
		c := method[i]
		if 'a' <= c && c <= 'z' {
			c -= 'a' - 'A'
		}
		dst = append(dst, c)
	}
	dst = append(dst, '\n')
	dst = append(dst, pathAndQuery...)
	dst = append(dst, '\n')
	dst = append(dst, date...)
	dst = append(dst, ';')
	dst = append(dst, host...)
	dst = append(dst, ';')
	dst = append(dst, contentHash...)
	return dst
}

// Signature returns base64(HMAC-SHA256(key, string to sign)).
func (k *Key) Signature(method, pathAndQuery, date, host, contentHash string) string {
	var sum [sha256.Size]byte
	k.signature(sum[:0], method, pathAndQuery, date, host, contentHash)
	return base64.StdEncoding.EncodeToString(sum[:])
}

func (k *Key) signature(dst []byte, method, pathAndQuery, date, host, contentHash string) []byte {
	bp := bufPool.Get().(*[]byte)
	msg := appendStringToSign((*bp)[:0], method, pathAndQuery, date, host, contentHash)
	dst = k.mac(dst, msg)
	clear(msg) // the string to sign describes the request; don't leave it lying in a pool
	*bp = msg[:0]
	bufPool.Put(bp)
	return dst
}

// Headers are the three headers that authenticate one request.
type Headers struct {
	Date          string // x-ms-date
	ContentSHA256 string // x-ms-content-sha256
	Authorization string // Authorization
}

// Sign signs one request. pathAndQuery is the request-target exactly as sent
// (in Go, URL.RequestURI()); host is the Host header exactly as sent;
// contentHash is ContentHash of the exact body bytes sent. t is the signing
// time, normally time.Now().
func (k *Key) Sign(method, pathAndQuery, host, contentHash string, t time.Time) Headers {
	date := FormatDate(t)
	var sum [sha256.Size]byte
	sig := k.signature(sum[:0], method, pathAndQuery, date, host, contentHash)
	var auth [authLen]byte // on the stack: the string conversion is the one allocation
	copy(auth[:], authPrefix)
	base64.StdEncoding.Encode(auth[len(authPrefix):], sig)
	return Headers{Date: date, ContentSHA256: contentHash, Authorization: string(auth[:])}
}

// Apply sets the headers on h, replacing any copies already there, and
// removes a Date header, which ACS would otherwise consider alongside x-ms-date.
func (s Headers) Apply(h http.Header) {
	h.Del("Date")
	vals := []string{s.Date, s.ContentSHA256, s.Authorization} // one allocation for three headers
	h[HeaderDate] = vals[0:1:1]
	h[HeaderContentSHA256] = vals[1:2:2]
	h[HeaderAuthorization] = vals[2:3:3]
}
