package signer_test

import (
	"crypto/hmac"
	"crypto/sha256"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/acsproxy/caddy-acs-hmac/signer"
)

// A fixed, typical small request.
const (
	benchKey    = "Zm9vYmFyLWFjcy10ZXN0LWtleS0zMi1ieXRlcyEhIQ=="
	benchMethod = "POST"
	benchTarget = "/emails:send?api-version=2023-03-31"
	benchHost   = "res.communication.azure.com"
)

var (
	benchBody = []byte(`{"senderAddress":"donotreply@example.com","recipients":{"to":[{"address":"a@example.com"}]},"content":{"subject":"hi","plainText":"hello"}}`)
	benchTime = time.Date(2024, 6, 1, 12, 0, 0, 0, time.UTC)

	sinkHeaders signer.Headers
	sinkString  string
	sinkErr     error
	sinkBytes   []byte
	sinkSum     [sha256.Size]byte
)

var benchSizes = []struct {
	name string
	n    int
}{
	{"small", len(benchBody)},
	{"1KiB", 1 << 10},
	{"1MiB", 1 << 20},
}

func benchBodyOf(n int) []byte {
	if n == len(benchBody) {
		return benchBody
	}
	return []byte(strings.Repeat("x", n))
}

// BenchmarkSign signs the fixed small request, its body hash precomputed.
func BenchmarkSign(b *testing.B) {
	k := mustKey(b, benchKey)
	ch := signer.ContentHash(benchBody)
	b.ReportAllocs()
	for b.Loop() {
		sinkHeaders = k.Sign(benchMethod, benchTarget, benchHost, ch, benchTime)
	}
}

// BenchmarkSignWithBody hashes the body and signs: the whole per-request
// cost, to compare with BenchmarkSHA256PlusHMAC at the same size.
func BenchmarkSignWithBody(b *testing.B) {
	k := mustKey(b, benchKey)
	for _, sz := range benchSizes {
		body := benchBodyOf(sz.n)
		b.Run(sz.name, func(b *testing.B) {
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				sinkHeaders = k.Sign(benchMethod, benchTarget, benchHost, signer.ContentHash(body), benchTime)
			}
		})
	}
}

func BenchmarkContentHash(b *testing.B) {
	for _, sz := range benchSizes[1:] {
		body := benchBodyOf(sz.n)
		b.Run(sz.name, func(b *testing.B) {
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				sinkString = signer.ContentHash(body)
			}
		})
	}
}

func BenchmarkVerify(b *testing.B) {
	k := mustKey(b, benchKey)
	ch := signer.ContentHash(benchBody)
	hdr := http.Header{}
	k.Sign(benchMethod, benchTarget, benchHost, ch, benchTime).Apply(hdr)
	r := signer.Request{Method: benchMethod, PathAndQuery: benchTarget, Host: benchHost, Header: hdr, ContentHash: ch}
	if err := k.Verify(r, benchTime, 0); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		sinkErr = k.Verify(r, benchTime, 0)
	}
}

// BenchmarkSHA256PlusHMAC is the floor: sha256.Sum256 over a body of the
// same size plus a fresh HMAC-SHA256 (key schedule included) over a string of
// the size of the fixed request's string to sign. "hmac-only" is the floor for
// BenchmarkSign; the sized runs are the floor for BenchmarkSignWithBody.
func BenchmarkSHA256PlusHMAC(b *testing.B) {
	key := []byte("foobar-acs-test-key-32-bytes!!!!")
	sts := []byte(signer.StringToSign(benchMethod, benchTarget, signer.FormatDate(benchTime), benchHost, signer.ContentHash(benchBody)))
	b.Run("hmac-only", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			m := hmac.New(sha256.New, key)
			m.Write(sts)
			sinkBytes = m.Sum(nil)
		}
	})
	for _, sz := range benchSizes {
		body := benchBodyOf(sz.n)
		b.Run(sz.name, func(b *testing.B) {
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				sinkSum = sha256.Sum256(body)
				m := hmac.New(sha256.New, key)
				m.Write(sts)
				sinkBytes = m.Sum(nil)
			}
		})
	}
}
