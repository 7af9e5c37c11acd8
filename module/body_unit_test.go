package module

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// utHash is base64(SHA-256(data)), computed without package signer.
func utHash(data []byte) string {
	sum := sha256.Sum256(data)
	return base64.StdEncoding.EncodeToString(sum[:])
}

// utPattern returns n bytes of a recognisable, non-repeating-ish pattern.
func utPattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte('a' + i*7%26)
	}
	return b
}

// utNoRead fails the test if it is read at all.
type utNoRead struct{ t *testing.T }

func (r utNoRead) Read([]byte) (int, error) {
	r.t.Error("body was read although its declared length already exceeds max")
	return 0, io.EOF
}

// utDataEOF returns as much as fits in p and, in the same call, io.EOF once
// everything has been handed out.
type utDataEOF struct{ rest []byte }

func (r *utDataEOF) Read(p []byte) (int, error) {
	n := copy(p, r.rest)
	r.rest = r.rest[n:]
	if len(r.rest) == 0 {
		return n, io.EOF
	}
	return n, nil
}

// utErrAfter hands out data, then fails with err (together with the last data).
type utErrAfter struct {
	rest []byte
	err  error
}

func (r *utErrAfter) Read(p []byte) (int, error) {
	n := copy(p, r.rest)
	r.rest = r.rest[n:]
	if len(r.rest) == 0 {
		return n, r.err
	}
	return n, nil
}

// utCounting counts bytes and calls delivered by the reader it wraps.
type utCounting struct {
	r     io.Reader
	n     int64
	calls int
}

func (c *utCounting) Read(p []byte) (int, error) {
	c.calls++
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

func TestReadBodyEmpty(t *testing.T) {
	const emptyHash = "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
	if got := utHash(nil); got != emptyHash {
		t.Fatalf("test constant: sha256 of nothing is %s", got)
	}
	for _, tc := range []struct {
		name string
		body io.Reader
		cl   int64
	}{
		{"nil length 0", nil, 0},
		{"nil unknown length", nil, -1},
		{"NoBody length 0", http.NoBody, 0},
		{"NoBody unknown length", http.NoBody, -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := readBody(tc.body, tc.cl, 1024)
			if err != nil {
				t.Fatalf("readBody: %v", err)
			}
			if len(b.data) != 0 {
				t.Errorf("data has %d bytes, want none", len(b.data))
			}
			if b.hash != emptyHash {
				t.Errorf("hash %q, want %q", b.hash, emptyHash)
			}
		})
	}
}

func TestReadBody(t *testing.T) {
	const big = 100_000 // above the 32 KiB initial buffer for unknown lengths
	for _, tc := range []struct {
		name string
		data []byte // what the reader holds
		cl   int64  // declared Content-Length; -1 unknown
		max  int64
		// wrap builds the reader; nil means bytes.NewReader
		wrap func([]byte) io.Reader
	}{
		{name: "exact length", data: []byte("hello, acs"), cl: 10, max: 1024},
		{name: "exact length equal to max", data: utPattern(1024), cl: 1024, max: 1024},
		{name: "exact length large", data: utPattern(big), cl: big, max: 1 << 20},
		{name: "known length zero, body not nil", data: nil, cl: 0, max: 1024},
		{name: "unknown, smaller than max", data: []byte("small"), cl: -1, max: 1024},
		{name: "unknown, equal to max (small max)", data: utPattern(1000), cl: -1, max: 1000},
		{name: "unknown, equal to max (grows past 32KiB)", data: utPattern(big), cl: -1, max: big},
		{name: "unknown, growth would overshoot max", data: utPattern(40_000), cl: -1, max: 40_000},
		{name: "unknown, smaller than max (grows)", data: utPattern(70_000), cl: -1, max: 1 << 20},
		{name: "unknown, empty", data: nil, cl: -1, max: 1024},
		{name: "understated length", data: utPattern(2000), cl: 5, max: 4096},
		{name: "overstated length", data: []byte("short"), cl: 100, max: 4096},
		{name: "data with EOF in the same call", data: []byte("data+EOF"), cl: 8, max: 1024,
			wrap: func(b []byte) io.Reader { return &utDataEOF{rest: b} }},
		{name: "data with EOF in the same call, unknown length", data: utPattern(5000), cl: -1, max: 5000,
			wrap: func(b []byte) io.Reader { return &utDataEOF{rest: b} }},
		{name: "iotest.DataErrReader", data: utPattern(3000), cl: -1, max: 4096,
			wrap: func(b []byte) io.Reader { return iotest.DataErrReader(bytes.NewReader(b)) }},
		{name: "one byte per Read, known length", data: []byte("one byte at a time"), cl: 18, max: 1024,
			wrap: func(b []byte) io.Reader { return iotest.OneByteReader(bytes.NewReader(b)) }},
		{name: "one byte per Read, unknown length", data: utPattern(300), cl: -1, max: 300,
			wrap: func(b []byte) io.Reader { return iotest.OneByteReader(bytes.NewReader(b)) }},
		{name: "half reader", data: utPattern(4000), cl: -1, max: 8000,
			wrap: func(b []byte) io.Reader { return iotest.HalfReader(bytes.NewReader(b)) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var r io.Reader = bytes.NewReader(tc.data)
			if tc.wrap != nil {
				r = tc.wrap(tc.data)
			}
			b, err := readBody(r, tc.cl, tc.max)
			if err != nil {
				t.Fatalf("readBody: %v", err)
			}
			if !bytes.Equal(b.data, tc.data) {
				t.Errorf("data: got %d bytes, want %d bytes (equal: false)", len(b.data), len(tc.data))
			}
			if want := utHash(tc.data); b.hash != want {
				t.Errorf("hash %q, want base64(sha256(data)) %q", b.hash, want)
			}
			if int64(cap(b.data)) > tc.max+1 {
				t.Errorf("cap(data) = %d, more than max+1 = %d", cap(b.data), tc.max+1)
			}
			if tc.cl >= 0 && int64(len(tc.data)) == tc.cl && int64(cap(b.data)) > tc.cl+1 {
				t.Errorf("exact Content-Length %d: cap(data) = %d, the buffer grew beyond Content-Length+1", tc.cl, cap(b.data))
			}
		})
	}
}

func TestReadBodyTooLarge(t *testing.T) {
	t.Run("declared length above max is refused without reading", func(t *testing.T) {
		for _, cl := range []int64{1025, 1 << 40} {
			b, err := readBody(utNoRead{t}, cl, 1024)
			if !errors.Is(err, errBodyTooLarge) {
				t.Errorf("Content-Length %d: err = %v, want errBodyTooLarge", cl, err)
			}
			if b != nil {
				t.Errorf("Content-Length %d: got a body", cl)
			}
		}
	})

	for _, tc := range []struct {
		name string
		size int   // bytes the reader holds
		cl   int64 // declared
		max  int64
		wrap func([]byte) io.Reader
	}{
		{name: "unknown length, one byte over", size: 1025, cl: -1, max: 1024},
		{name: "unknown length, far over", size: 1 << 20, cl: -1, max: 1000},
		{name: "unknown length, over after growth", size: 200_000, cl: -1, max: 100_000},
		{name: "understated length, over", size: 5000, cl: 10, max: 1024},
		{name: "max zero", size: 1, cl: -1, max: 0},
		{name: "data with EOF, one byte over", size: 65, cl: -1, max: 64,
			wrap: func(b []byte) io.Reader { return &utDataEOF{rest: b} }},
		{name: "one byte per Read, over", size: 100, cl: -1, max: 50,
			wrap: func(b []byte) io.Reader { return iotest.OneByteReader(bytes.NewReader(b)) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := utPattern(tc.size)
			var r io.Reader = bytes.NewReader(data)
			if tc.wrap != nil {
				r = tc.wrap(data)
			}
			c := &utCounting{r: r}
			b, err := readBody(c, tc.cl, tc.max)
			if !errors.Is(err, errBodyTooLarge) {
				t.Fatalf("err = %v, want errBodyTooLarge", err)
			}
			if b != nil {
				t.Error("got a body along with the error")
			}
			// It stops as soon as more than max bytes arrived.
			if c.n > tc.max+1 {
				t.Errorf("read %d bytes before refusing; want at most max+1 = %d", c.n, tc.max+1)
			}
		})
	}
}

func TestReadBodyErrors(t *testing.T) {
	boom := errors.New("connection reset by peer (test)")
	for _, tc := range []struct {
		name    string
		r       io.Reader
		wantErr error
	}{
		{"MaxBytesError", &utErrAfter{rest: []byte("abc"), err: &http.MaxBytesError{Limit: 3}}, errBodyTooLarge},
		{"wrapped MaxBytesError", &utErrAfter{rest: []byte("abc"), err: fmt.Errorf("reading: %w", &http.MaxBytesError{Limit: 3})}, errBodyTooLarge},
		{"http.MaxBytesReader", http.MaxBytesReader(nil, io.NopCloser(strings.NewReader("0123456789")), 4), errBodyTooLarge},
		{"other error", &utErrAfter{rest: []byte("partial"), err: boom}, boom},
		{"other error, no data", iotest.ErrReader(boom), boom},
		{"unexpected EOF", &utErrAfter{rest: []byte("partial"), err: io.ErrUnexpectedEOF}, io.ErrUnexpectedEOF},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, cl := range []int64{-1, 10} {
				b, err := readBody(tc.r, cl, 1024)
				if !errors.Is(err, tc.wantErr) {
					t.Errorf("Content-Length %d: err = %v, want %v", cl, err, tc.wantErr)
				}
				if b != nil {
					t.Errorf("Content-Length %d: got a body along with the error", cl)
				}
				if err != nil {
					break // the reader is spent
				}
			}
		})
	}
}

func TestBufferedBodyNeverPrintsData(t *testing.T) {
	secret := []byte("SECRET-BODY-to=+15551234567&msg=hello")
	b, err := readBody(bytes.NewReader(secret), int64(len(secret)), 1024)
	if err != nil {
		t.Fatal(err)
	}
	if got := b.String(); got != "[request body withheld]" {
		t.Errorf("String() = %q", got)
	}
	// Renderings of the bytes that fmt can produce.
	leaks := []string{
		string(secret),
		strings.Trim(fmt.Sprint(secret[:6]), "[]"),                    // decimal: 83 69 67 ...
		strings.TrimPrefix(fmt.Sprintf("%#v", secret[:6]), "[]byte{"), // hex:     0x53, 0x45, ...
		fmt.Sprintf("%x", secret[:6]),
	}
	vars := map[string]any{bodyVar: b}
	type holder struct{ Body *bufferedBody }
	for _, format := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%d"} {
		for _, arg := range []struct {
			name string
			v    any
		}{
			{"pointer", b},
			{"in vars map", vars},
			{"in struct", holder{b}},
		} {
			out := fmt.Sprintf(format, arg.v)
			for _, l := range leaks {
				if strings.Contains(out, strings.TrimSpace(strings.TrimSuffix(l, "}"))) {
					t.Errorf("fmt %s of %s prints the body: %s", format, arg.name, out)
					break
				}
			}
		}
	}

	// The {http.vars.acs_hmac.body} placeholder, as a log format would use it.
	req, _ := http.NewRequest(http.MethodGet, "http://example.com/", nil)
	req = req.WithContext(context.WithValue(req.Context(), caddyhttp.VarsCtxKey, map[string]any{bodyVar: b}))
	repl := caddyhttp.NewTestReplacer(req)
	if got := repl.ReplaceAll("{http.vars."+bodyVar+"}", ""); strings.Contains(got, "SECRET") {
		t.Errorf("placeholder prints the body: %s", got)
	}
}

func BenchmarkReadBody(b *testing.B) {
	for _, size := range []struct {
		name string
		n    int
	}{{"1KiB", 1 << 10}, {"1MiB", 1 << 20}} {
		b.Run(size.name, func(b *testing.B) {
			data := utPattern(size.n)
			r := bytes.NewReader(data)
			b.ReportAllocs()
			b.SetBytes(int64(size.n))
			for b.Loop() {
				r.Reset(data)
				if _, err := readBody(r, int64(size.n), DefaultMaxBodySize); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
