package signer_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/acsproxy/caddy-acs-hmac/signer"
)

const verifyKey = "Zm9vYmFyLWFjcy10ZXN0LWtleS0zMi1ieXRlcyEhIQ==" // "foobar-acs-test-key-32-bytes!!!"

var verifyNow = time.Date(2024, 6, 1, 12, 0, 0, 0, time.UTC)

// signedRequest returns a request signed at signAt by key, as a server would
// see it.
func signedRequest(t testing.TB, key *signer.Key, signAt time.Time) signer.Request {
	t.Helper()
	body := []byte(`{"senderAddress":"donotreply@example.com","content":{"subject":"hi"}}`)
	const (
		method = "POST"
		target = "/emails:send?api-version=2023-03-31"
		host   = "res.communication.azure.com"
	)
	ch := signer.ContentHash(body)
	hdr := http.Header{}
	hdr.Set("Content-Type", "application/json")
	key.Sign(method, target, host, ch, signAt).Apply(hdr)
	return signer.Request{Method: method, PathAndQuery: target, Host: host, Header: hdr, ContentHash: ch}
}

var allVerifyErrs = []error{
	signer.ErrMissingAuth, signer.ErrMalformedAuth, signer.ErrMissingDate,
	signer.ErrStaleDate, signer.ErrContentMismatch, signer.ErrBadSignature,
}

func checkVerifyErr(t *testing.T, got, want error) {
	t.Helper()
	if want == nil {
		if got != nil {
			t.Fatalf("Verify = %v, want nil", got)
		}
		return
	}
	if !errors.Is(got, want) {
		t.Fatalf("Verify = %v, want %v", got, want)
	}
	for _, e := range allVerifyErrs {
		if e != want && errors.Is(got, e) {
			t.Fatalf("Verify = %v also matches %v", got, e)
		}
	}
}

func authWithSig(sig string) string {
	return "HMAC-SHA256 SignedHeaders=x-ms-date;host;x-ms-content-sha256&Signature=" + sig
}

func TestVerify(t *testing.T) {
	k := mustKey(t, verifyKey)
	otherKey := mustKey(t, "b3RoZXIta2V5LW90aGVyLWtleS1vdGhlci1rZXktIQ==")

	sigOf := func(r signer.Request) string {
		_, s, _ := strings.Cut(r.Header.Get("Authorization"), "&Signature=")
		return s
	}
	rawSig := func(r signer.Request) []byte {
		b, err := base64.StdEncoding.DecodeString(sigOf(r))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}

	tests := []struct {
		name    string
		signAt  time.Time
		mutate  func(r *signer.Request)
		key     *signer.Key // verifying key; nil = k
		now     time.Time   // zero = verifyNow
		maxSkew time.Duration
		want    error
	}{
		{name: "round trip", want: nil},
		{name: "round trip, lower-case method at verifier", mutate: func(r *signer.Request) { r.Method = "post" }},
		{name: "round trip, lower-case scheme name", mutate: func(r *signer.Request) {
			r.Header.Set("Authorization", "hmac-sha256"+strings.TrimPrefix(r.Header.Get("Authorization"), "HMAC-SHA256"))
		}},
		{name: "round trip, params in reverse order", mutate: func(r *signer.Request) {
			r.Header.Set("Authorization", "HMAC-SHA256 Signature="+sigOf(*r)+"&SignedHeaders=x-ms-date;host;x-ms-content-sha256")
		}},
		{name: "round trip, nothing else in the header", mutate: func(r *signer.Request) { r.Header.Del("Content-Type") }},

		// Authorization scheme.
		{name: "missing Authorization", mutate: func(r *signer.Request) { r.Header.Del("Authorization") }, want: signer.ErrMissingAuth},
		{name: "nil header", mutate: func(r *signer.Request) { r.Header = nil }, want: signer.ErrMissingAuth},
		{name: "empty Authorization", mutate: func(r *signer.Request) { r.Header.Set("Authorization", "") }, want: signer.ErrMissingAuth},
		{name: "Bearer scheme", mutate: func(r *signer.Request) { r.Header.Set("Authorization", "Bearer eyJhbGciOi.x.y") }, want: signer.ErrMissingAuth},
		{name: "Basic scheme", mutate: func(r *signer.Request) { r.Header.Set("Authorization", "Basic dXNlcjpwYXNz") }, want: signer.ErrMissingAuth},
		{name: "scheme without params", mutate: func(r *signer.Request) { r.Header.Set("Authorization", "HMAC-SHA256") }, want: signer.ErrMissingAuth},
		{name: "HMAC-SHA1 scheme", mutate: func(r *signer.Request) {
			r.Header.Set("Authorization", strings.Replace(r.Header.Get("Authorization"), "HMAC-SHA256", "HMAC-SHA1", 1))
		}, want: signer.ErrMissingAuth},

		// Malformed parameters.
		{name: "empty params", mutate: func(r *signer.Request) { r.Header.Set("Authorization", "HMAC-SHA256 ") }, want: signer.ErrMalformedAuth},
		{name: "missing Signature", mutate: func(r *signer.Request) {
			r.Header.Set("Authorization", "HMAC-SHA256 SignedHeaders=x-ms-date;host;x-ms-content-sha256")
		}, want: signer.ErrMalformedAuth},
		{name: "empty Signature", mutate: func(r *signer.Request) { r.Header.Set("Authorization", authWithSig("")) }, want: signer.ErrMalformedAuth},
		{name: "missing SignedHeaders", mutate: func(r *signer.Request) {
			r.Header.Set("Authorization", "HMAC-SHA256 Signature="+sigOf(*r))
		}, want: signer.ErrMalformedAuth},
		{name: "extra Credential param", mutate: func(r *signer.Request) {
			r.Header.Set("Authorization", "HMAC-SHA256 Credential=abc&SignedHeaders=x-ms-date;host;x-ms-content-sha256&Signature="+sigOf(*r))
		}, want: signer.ErrMalformedAuth},
		{name: "extra trailing param", mutate: func(r *signer.Request) { r.Header.Set("Authorization", r.Header.Get("Authorization")+"&x=y") }, want: signer.ErrMalformedAuth},
		{name: "trailing ampersand", mutate: func(r *signer.Request) { r.Header.Set("Authorization", r.Header.Get("Authorization")+"&") }, want: signer.ErrMalformedAuth},
		{name: "duplicate Signature", mutate: func(r *signer.Request) {
			r.Header.Set("Authorization", r.Header.Get("Authorization")+"&Signature="+sigOf(*r))
		}, want: signer.ErrMalformedAuth},
		{name: "duplicate SignedHeaders", mutate: func(r *signer.Request) {
			r.Header.Set("Authorization", r.Header.Get("Authorization")+"&SignedHeaders=x-ms-date;host;x-ms-content-sha256")
		}, want: signer.ErrMalformedAuth},
		{name: "SignedHeaders reordered", mutate: func(r *signer.Request) {
			r.Header.Set("Authorization", "HMAC-SHA256 SignedHeaders=host;x-ms-date;x-ms-content-sha256&Signature="+sigOf(*r))
		}, want: signer.ErrMalformedAuth},
		{name: "SignedHeaders missing one", mutate: func(r *signer.Request) {
			r.Header.Set("Authorization", "HMAC-SHA256 SignedHeaders=x-ms-date;host&Signature="+sigOf(*r))
		}, want: signer.ErrMalformedAuth},
		{name: "SignedHeaders with extra header", mutate: func(r *signer.Request) {
			r.Header.Set("Authorization", "HMAC-SHA256 SignedHeaders=x-ms-date;host;x-ms-content-sha256;content-type&Signature="+sigOf(*r))
		}, want: signer.ErrMalformedAuth},
		{name: "param without =", mutate: func(r *signer.Request) {
			r.Header.Set("Authorization", "HMAC-SHA256 SignedHeaders&Signature="+sigOf(*r))
		}, want: signer.ErrMalformedAuth},
		{name: "non-base64 signature", mutate: func(r *signer.Request) { r.Header.Set("Authorization", authWithSig("not*base64!")) }, want: signer.ErrMalformedAuth},
		{name: "url-safe base64 signature", mutate: func(r *signer.Request) {
			r.Header.Set("Authorization", authWithSig("-_"+sigOf(*r)[2:]))
		}, want: signer.ErrMalformedAuth},
		{name: "unpadded signature", mutate: func(r *signer.Request) {
			r.Header.Set("Authorization", authWithSig(strings.TrimRight(sigOf(*r), "=")))
		}, want: signer.ErrMalformedAuth},
		{name: "signature 31 bytes", mutate: func(r *signer.Request) {
			r.Header.Set("Authorization", authWithSig(base64.StdEncoding.EncodeToString(rawSig(*r)[:31])))
		}, want: signer.ErrMalformedAuth},
		{name: "signature 33 bytes", mutate: func(r *signer.Request) {
			r.Header.Set("Authorization", authWithSig(base64.StdEncoding.EncodeToString(append(rawSig(*r), 0))))
		}, want: signer.ErrMalformedAuth},
		{name: "signature 64 bytes", mutate: func(r *signer.Request) {
			r.Header.Set("Authorization", authWithSig(base64.StdEncoding.EncodeToString(append(rawSig(*r), rawSig(*r)...))))
		}, want: signer.ErrMalformedAuth},

		// Dates.
		{name: "missing date", mutate: func(r *signer.Request) { r.Header.Del("X-Ms-Date") }, want: signer.ErrMissingDate},
		{name: "garbage date", mutate: func(r *signer.Request) { r.Header.Set("X-Ms-Date", "yesterday") }, want: signer.ErrMissingDate},
		{name: "unix-seconds date", mutate: func(r *signer.Request) { r.Header.Set("X-Ms-Date", "1717243200") }, want: signer.ErrMissingDate},
		{name: "RFC 3339 date", mutate: func(r *signer.Request) { r.Header.Set("X-Ms-Date", "2024-06-01T12:00:00Z") }, want: signer.ErrMissingDate},
		{name: "garbage x-ms-date, good Date", mutate: func(r *signer.Request) {
			r.Header.Set("Date", r.Header.Get("X-Ms-Date"))
			r.Header.Set("X-Ms-Date", "garbage")
		}, want: signer.ErrMissingDate},
		{name: "stale: 16 min old", signAt: verifyNow.Add(-16 * time.Minute), want: signer.ErrStaleDate},
		{name: "stale: 16 min in the future", signAt: verifyNow.Add(16 * time.Minute), want: signer.ErrStaleDate},
		{name: "stale: a day old", signAt: verifyNow.Add(-24 * time.Hour), want: signer.ErrStaleDate},
		{name: "fresh: 14m59s old", signAt: verifyNow.Add(-(14*time.Minute + 59*time.Second))},
		{name: "fresh: 14m59s in the future", signAt: verifyNow.Add(14*time.Minute + 59*time.Second)},
		{name: "fresh: exactly 15 min old", signAt: verifyNow.Add(-15 * time.Minute)},
		{name: "fresh: exactly 15 min in the future", signAt: verifyNow.Add(15 * time.Minute)},
		{name: "custom skew: 2 min old, 1 min allowed", signAt: verifyNow.Add(-2 * time.Minute), maxSkew: time.Minute, want: signer.ErrStaleDate},
		{name: "custom skew: 2 min ahead, 1 min allowed", signAt: verifyNow.Add(2 * time.Minute), maxSkew: time.Minute, want: signer.ErrStaleDate},
		{name: "custom skew: 30 s old, 1 min allowed", signAt: verifyNow.Add(-30 * time.Second), maxSkew: time.Minute},
		{name: "custom skew: 20 min old, 30 min allowed", signAt: verifyNow.Add(-20 * time.Minute), maxSkew: 30 * time.Minute},
		{name: "zero skew means default: 10 min old", signAt: verifyNow.Add(-10 * time.Minute), maxSkew: 0},
		{name: "negative skew means default: 16 min old", signAt: verifyNow.Add(-16 * time.Minute), maxSkew: -time.Second, want: signer.ErrStaleDate},
		{name: "signed and verified in other zones", signAt: verifyNow.In(time.FixedZone("A", 5*3600)), now: verifyNow.In(time.FixedZone("B", -8*3600))},

		// Content hash.
		{name: "content hash header differs from body", mutate: func(r *signer.Request) { r.ContentHash = signer.ContentHash([]byte("other body")) }, want: signer.ErrContentMismatch},
		{name: "content hash header missing", mutate: func(r *signer.Request) { r.Header.Del("X-Ms-Content-Sha256") }, want: signer.ErrContentMismatch},
		{name: "content hash header garbage", mutate: func(r *signer.Request) { r.Header.Set("X-Ms-Content-Sha256", "zzz") }, want: signer.ErrContentMismatch},
		{name: "body and header both replaced", mutate: func(r *signer.Request) {
			h := signer.ContentHash([]byte("tampered"))
			r.ContentHash = h
			r.Header.Set("X-Ms-Content-Sha256", h)
		}, want: signer.ErrBadSignature},

		// Signature.
		{name: "wrong key", key: otherKey, want: signer.ErrBadSignature},
		{name: "tampered path", mutate: func(r *signer.Request) { r.PathAndQuery = "/emails:sent?api-version=2023-03-31" }, want: signer.ErrBadSignature},
		{name: "tampered path case", mutate: func(r *signer.Request) { r.PathAndQuery = "/Emails:send?api-version=2023-03-31" }, want: signer.ErrBadSignature},
		{name: "tampered query", mutate: func(r *signer.Request) { r.PathAndQuery = "/emails:send?api-version=2024-03-31" }, want: signer.ErrBadSignature},
		{name: "query dropped", mutate: func(r *signer.Request) { r.PathAndQuery = "/emails:send" }, want: signer.ErrBadSignature},
		{name: "query appended", mutate: func(r *signer.Request) { r.PathAndQuery += "&x=1" }, want: signer.ErrBadSignature},
		{name: "query re-encoded", mutate: func(r *signer.Request) { r.PathAndQuery = "/emails%3Asend?api-version=2023-03-31" }, want: signer.ErrBadSignature},
		{name: "tampered host", mutate: func(r *signer.Request) { r.Host = "evil.communication.azure.com" }, want: signer.ErrBadSignature},
		{name: "host with default port added", mutate: func(r *signer.Request) { r.Host = "res.communication.azure.com:443" }, want: signer.ErrBadSignature},
		{name: "tampered method", mutate: func(r *signer.Request) { r.Method = "PUT" }, want: signer.ErrBadSignature},
		{name: "re-dated within skew", mutate: func(r *signer.Request) { r.Header.Set("X-Ms-Date", signer.FormatDate(verifyNow.Add(time.Second))) }, want: signer.ErrBadSignature},
		{name: "flipped signature bit", mutate: func(r *signer.Request) {
			s := rawSig(*r)
			s[0] ^= 1
			r.Header.Set("Authorization", authWithSig(base64.StdEncoding.EncodeToString(s)))
		}, want: signer.ErrBadSignature},
		{name: "all-zero signature", mutate: func(r *signer.Request) {
			r.Header.Set("Authorization", authWithSig(base64.StdEncoding.EncodeToString(make([]byte, sha256.Size))))
		}, want: signer.ErrBadSignature},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			signAt := tc.signAt
			if signAt.IsZero() {
				signAt = verifyNow
			}
			now := tc.now
			if now.IsZero() {
				now = verifyNow
			}
			r := signedRequest(t, k, signAt)
			if tc.mutate != nil {
				tc.mutate(&r)
			}
			vk := tc.key
			if vk == nil {
				vk = k
			}
			checkVerifyErr(t, vk.Verify(r, now, tc.maxSkew), tc.want)
		})
	}
}

func TestVerifyDateFallback(t *testing.T) {
	k := mustKey(t, verifyKey)

	t.Run("Date used when x-ms-date absent", func(t *testing.T) {
		r := signedRequest(t, k, verifyNow)
		r.Header.Set("Date", r.Header.Get("X-Ms-Date"))
		r.Header.Del("X-Ms-Date")
		checkVerifyErr(t, k.Verify(r, verifyNow, 0), nil)
	})
	t.Run("Date stale when x-ms-date absent", func(t *testing.T) {
		r := signedRequest(t, k, verifyNow.Add(-time.Hour))
		r.Header.Set("Date", r.Header.Get("X-Ms-Date"))
		r.Header.Del("X-Ms-Date")
		checkVerifyErr(t, k.Verify(r, verifyNow, 0), signer.ErrStaleDate)
	})
	t.Run("Date garbage when x-ms-date absent", func(t *testing.T) {
		r := signedRequest(t, k, verifyNow)
		r.Header.Set("Date", "garbage")
		r.Header.Del("X-Ms-Date")
		checkVerifyErr(t, k.Verify(r, verifyNow, 0), signer.ErrMissingDate)
	})
	t.Run("x-ms-date wins over Date", func(t *testing.T) {
		r := signedRequest(t, k, verifyNow)
		r.Header.Set("Date", "Mon, 01 Jan 2001 00:00:00 GMT")
		checkVerifyErr(t, k.Verify(r, verifyNow, 0), nil)
	})
	t.Run("x-ms-date wins over a fresh Date", func(t *testing.T) {
		r := signedRequest(t, k, verifyNow.Add(-time.Hour))
		r.Header.Set("Date", signer.FormatDate(verifyNow))
		checkVerifyErr(t, k.Verify(r, verifyNow, 0), signer.ErrStaleDate)
	})
	t.Run("signature covers the Date value", func(t *testing.T) {
		r := signedRequest(t, k, verifyNow)
		r.Header.Set("Date", signer.FormatDate(verifyNow.Add(time.Second)))
		r.Header.Del("X-Ms-Date")
		checkVerifyErr(t, k.Verify(r, verifyNow, 0), signer.ErrBadSignature)
	})
	t.Run("other HTTP date formats are signed as received", func(t *testing.T) {
		// RFC 850 and ANSI C dates parse; the signature is over the text received.
		for _, date := range []string{"Saturday, 01-Jun-24 12:00:00 GMT", "Sat Jun  1 12:00:00 2024"} {
			sig := k.Signature("POST", "/x", date, "h", signer.EmptyContentHash)
			hdr := http.Header{}
			hdr.Set("X-Ms-Date", date)
			hdr.Set("X-Ms-Content-Sha256", signer.EmptyContentHash)
			hdr.Set("Authorization", authWithSig(sig))
			r := signer.Request{Method: "POST", PathAndQuery: "/x", Host: "h", Header: hdr, ContentHash: signer.EmptyContentHash}
			checkVerifyErr(t, k.Verify(r, verifyNow, 0), nil)
		}
	})
}

// TestVerifyOverHTTP signs real requests with net/http, sends them to a
// server, and verifies them there from what arrived on the wire: the
// request-target and Host exactly as sent.
func TestVerifyOverHTTP(t *testing.T) {
	k := mustKey(t, verifyKey)
	type result struct {
		uri string
		err error
	}
	results := make(chan result, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			results <- result{r.RequestURI, err}
			return
		}
		err = k.Verify(signer.Request{
			Method:       r.Method,
			PathAndQuery: r.RequestURI,
			Host:         r.Host,
			Header:       r.Header,
			ContentHash:  signer.ContentHash(body),
		}, time.Now(), 0)
		results <- result{r.RequestURI, err}
	}))
	defer srv.Close()

	paths := []string{
		"/emails:send?api-version=2023-03-31",
		"/identities/a%2Fb?api-version=2023-10-01",
		"/q?a=b+c&d=e%20f",
		"/empty-query?",
		"",
		"/caf%C3%A9/%F0%9F%98%80",
		"/a/./b/../c",
	}
	for _, p := range paths {
		for _, body := range [][]byte{nil, []byte(`{"x":"😀"}`)} {
			method := http.MethodGet
			var rd io.Reader
			if body != nil {
				method, rd = http.MethodPost, bytes.NewReader(body)
			}
			req, err := http.NewRequest(method, srv.URL+p, rd)
			if err != nil {
				t.Fatal(err)
			}
			host := signer.CanonicalHost(req.URL.Scheme, req.URL.Host)
			req.Host = host
			k.Sign(req.Method, req.URL.RequestURI(), host, signer.ContentHash(body), time.Now()).Apply(req.Header)
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			res := <-results
			if res.err != nil {
				t.Errorf("%s %q (sent as %q): Verify = %v", method, p, res.uri, res.err)
			}
		}
	}
}

// TestVerifyRequiresContentHash: a caller that forgets to hash the received
// body must not get a pass when the client also sent no hash.
func TestVerifyRequiresContentHash(t *testing.T) {
	k, err := signer.ParseKey("pw==")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	h := k.Sign("GET", "/", "example.com", "", now)
	hdr := http.Header{}
	h.Apply(hdr)
	err = k.Verify(signer.Request{Method: "GET", PathAndQuery: "/", Host: "example.com", Header: hdr}, now, 0)
	if !errors.Is(err, signer.ErrContentMismatch) {
		t.Fatalf("Verify with no content hash = %v, want ErrContentMismatch", err)
	}
}
