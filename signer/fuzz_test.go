package signer_test

import (
	"errors"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/acsproxy/caddy-acs-hmac/signer"
)

// connStrErrTemplates are every error message ParseConnectionString can
// produce, with the character count replaced by "N". None has a place for input text,
// so matching one of them proves the error echoes nothing.
var connStrErrTemplates = []string{
	"acs connection string: a part has no '=' (expected endpoint=...;accesskey=...)",
	"acs connection string: endpoint given twice",
	"acs connection string: accesskey given twice",
	"acs connection string: missing endpoint",
	"acs connection string: missing accesskey",
	"acs connection string: endpoint is not a valid URL",
	"acs connection string: endpoint must be an absolute http:// or https:// URL",
	"acs connection string: endpoint has no host",
	"acs connection string: endpoint must be scheme://host[:port] with no path, query or user info",
	"acs connection string: accesskey: acs access key: not valid base64 (N characters)",
	"acs connection string: accesskey: acs access key: empty",
}

var digitRun = regexp.MustCompile(`\(\d+ characters\)`)

// rawAccessKeyValues returns what follows each "accesskey=" (ASCII case
// folded) in s, up to the next ';', both raw and trimmed, plus the values the
// parser itself would take (accessKeyValues, which also folds Unicode): a
// superset of what ParseConnectionString treats as the key.
func rawAccessKeyValues(s string) []string {
	const marker = "accesskey="
	out := accessKeyValues(s)
	for i := 0; i+len(marker) <= len(s); i++ {
		if !asciiEqualFold(s[i:i+len(marker)], marker) {
			continue
		}
		v := s[i+len(marker):]
		if end := strings.IndexByte(v, ';'); end >= 0 {
			v = v[:end]
		}
		out = append(out, v, strings.TrimSpace(v))
	}
	return out
}

func asciiEqualFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

func FuzzParseConnectionString(f *testing.F) {
	seeds := []string{
		"endpoint=https://res.communication.azure.com/;accesskey=" + csKey,
		"ACCESSKEY=" + csKey31 + ";ENDPOINT=https://res.europe.communication.azure.com",
		"  endpoint = https://res.example:8443/ ;\taccesskey =  " + csKey + " \n;",
		"endpoint=http://127.0.0.1:10000;accesskey=" + csKey,
		"endpoint=https://[::1]:443/;accesskey=" + csKey,
		"endpoint=https://res/;accesskey=" + csBadKey,
		"endpoint=https://res/;accesskey=" + csKey[:10] + "*" + csKey[11:],
		"endpoint=ftp://res/;accesskey=" + csKey,
		"endpoint=res.communication.azure.com;accesskey=" + csKey,
		"endpoint=https://res/path;accesskey=" + csKey,
		"endpoint=https://user:" + csKey + "@res/;accesskey=" + csKey,
		"endpoint=https://res/?accesskey=" + csKey + ";accesskey=" + csKey,
		"endpoint=https://res com/%zz;accesskey=" + csKey,
		"endpoint=;accesskey=" + csKey,
		"endpoint=https://res/;accesskey=",
		"endpoint=https://res/;accesskey===",
		"endpoint=https://a/;endpoint=https://b/;accesskey=" + csKey,
		"endpoint=https://a/;accesskey=" + csKey + ";accesskey=" + csKey,
		"endpoint=https://a/;" + strings.TrimRight(csKey, "="),
		"accesskey=" + csKey,
		"accesskey=abcd;endpoint=https://:443",
		"accesskey=c2VjcmV0;endpoint=https:///",
		"accesskey=c2VjcmV0;endpoint=https:opaque",
		"accesskey=c2VjcmV0;endpoint=https://[::1",
		"accesskey=c2VjcmV0;endpoint=https://h:99999999999999999999",
		"accesskey=c2VjcmV0;endpoint=HTTP://H:80",
		"",
		";;;",
		"=",
		"endpoint",
		"\x00;\xff=\xfe",
		"\x80ACCesskeY=", // ToLower changes byte offsets
		"endpoint=https://h/;acces\u212aey=" + csBadKey, // Kelvin sign folds to k
		"endpoint=https://h/;\u212a=;accesskey=" + csBadKey + "\u212a",
	}
	for _, s := range seeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c, err := signer.ParseConnectionString(s)
		if err == nil {
			if c.Endpoint == nil || c.Key == nil {
				t.Fatalf("success without endpoint or key: %v", c)
			}
			u := c.Endpoint
			if u.Scheme != "http" && u.Scheme != "https" {
				t.Fatalf("endpoint scheme %q", u.Scheme)
			}
			if u.Host == "" || u.Hostname() == "" {
				t.Fatalf("endpoint %q has no host", u)
			}
			if u.Path != "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil || u.Opaque != "" {
				t.Fatalf("endpoint %#v is more than scheme://host", *u)
			}
			if got := signer.CanonicalHost(u.Scheme, u.Host); got != u.Host {
				t.Fatalf("endpoint host %q is not canonical (%q)", u.Host, got)
			}
			u2, err := signer.ParseEndpoint(u.String())
			if err != nil || u2.String() != u.String() {
				t.Fatalf("ParseEndpoint(%q) = %v, %v: not a fixed point", u, u2, err)
			}
			if c.Key.ID() == "" {
				t.Fatal("key has no ID")
			}
			return
		}
		if !errors.Is(err, signer.ErrConnectionString) {
			t.Fatalf("error %q does not wrap ErrConnectionString", err)
		}
		if c.Endpoint != nil || c.Key != nil {
			t.Fatalf("error with a credential: %v", c)
		}
		msg := err.Error()
		norm := digitRun.ReplaceAllString(msg, "(N characters)")
		known := false
		for _, tmpl := range connStrErrTemplates {
			if norm == tmpl {
				known = true
				break
			}
		}
		if !known {
			t.Fatalf("unexpected error message %q (check it cannot echo input, then add it to connStrErrTemplates)", msg)
		}
		for _, v := range rawAccessKeyValues(s) {
			// Values so short or generic that the fixed text contains them
			// ("host", "=", a one-digit length) are not an echo.
			if len(v) >= 4 && strings.Contains(msg, v) && !strings.Contains(norm, v) {
				t.Fatalf("error %q contains the accesskey value %q", msg, v)
			}
		}
	})
}

// The sentinels Verify may return.
func isVerifyErr(err error) bool {
	for _, e := range allVerifyErrs {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

func FuzzVerify(f *testing.F) {
	vt := time.Date(2022, 4, 13, 18, 9, 12, 0, time.UTC).Unix()
	f.Add("HMAC-SHA256 SignedHeaders=x-ms-date;host;x-ms-content-sha256&Signature="+vecSigQuery, vecDate, signer.EmptyContentHash, "GET", "/testPath?testQuery=test", "example.com", []byte{0xa7}, vt)
	f.Add("HMAC-SHA256 SignedHeaders=x-ms-date;host;x-ms-content-sha256&Signature="+vecSigNoQ, vecDate, signer.EmptyContentHash, "get", "/testPath", "example.com", []byte{0xa7}, vt)
	f.Add("Bearer x", "Sat, 01 Jun 2024 12:00:00 GMT", signer.ContentHash([]byte("banana")), "POST", "/emails:send?api-version=2023-03-31", "res.communication.azure.com", []byte("key"), int64(1717243200))
	f.Add("HMAC-SHA256 Signature=AAAA&SignedHeaders=x", "garbage", "", "", "", "", []byte{}, int64(0))
	f.Add("HMAC-SHA256 ", "", "zzz", "put", "/a%2Fb?", "[::1]:8443", []byte{1, 2, 3}, int64(-1))
	f.Add("hmac-sha256 signedheaders=X-MS-DATE;HOST;X-MS-CONTENT-SHA256&signature=====", "Saturday, 01-Jun-24 12:00:00 GMT", "+/=", "DELETE", "/caf\u00e9/\U0001F600?q=a+b", "h:1", []byte("\x00\xff"), int64(253402300799))
	f.Add("HMAC-SHA256 SignedHeaders=x-ms-date;host;x-ms-content-sha256&Signature="+vecSigNoQ+"&", "Sat Jun  1 12:00:00 2024", "\n", "G\x00T", "\n;\n", ";", []byte("k"), int64(-62135596800))
	f.Fuzz(func(t *testing.T, auth, date, hash, method, path, host string, rawKey []byte, unix int64) {
		if len(rawKey) == 0 {
			rawKey = []byte{0xa7}
		}
		k, err := signer.NewKey(rawKey)
		if err != nil {
			t.Fatal(err)
		}
		// Years 0001 to 9999: what an HTTP date can carry.
		const minUnix, maxUnix = -62135596800, 253402300799
		if unix < minUnix || unix > maxUnix {
			unix = minUnix + (unix%(maxUnix-minUnix)+(maxUnix-minUnix))%(maxUnix-minUnix)
		}
		now := time.Unix(unix, 0).UTC()

		// 1. Arbitrary headers: no panic, and any failure is a sentinel.
		hdr := http.Header{}
		hdr["Authorization"] = []string{auth}
		hdr["X-Ms-Date"] = []string{date}
		hdr["X-Ms-Content-Sha256"] = []string{hash}
		r := signer.Request{Method: method, PathAndQuery: path, Host: host, Header: hdr, ContentHash: hash}
		for _, maxSkew := range []time.Duration{0, -1, time.Second, 1 << 62} {
			if err := k.Verify(r, now, maxSkew); err != nil && !isVerifyErr(err) {
				t.Fatalf("Verify returned a non-sentinel error %v", err)
			}
		}
		hdr.Del("X-Ms-Date")
		hdr["Date"] = []string{date}
		if err := k.Verify(r, now, 0); err != nil && !isVerifyErr(err) {
			t.Fatalf("Verify (Date fallback) returned a non-sentinel error %v", err)
		}

		// 2. What Sign produces for these inputs verifies. (A content hash is
		// never empty: Verify refuses an empty one, so use the empty body's.)
		if hash == "" {
			hash = signer.EmptyContentHash
		}
		hdr = http.Header{"Authorization": {auth}, "Date": {date}}
		h := k.Sign(method, path, host, hash, now)
		h.Apply(hdr)
		r = signer.Request{Method: method, PathAndQuery: path, Host: host, Header: hdr, ContentHash: hash}
		if err := k.Verify(r, now, 0); err != nil {
			t.Fatalf("Sign(%q, %q, %q, %q, %v) = %+v does not verify: %v", method, path, host, hash, now, h, err)
		}
		if err := k.Verify(r, now.Add(signer.DefaultMaxSkew+time.Second), 0); !errors.Is(err, signer.ErrStaleDate) {
			t.Fatalf("Verify 15m01s later = %v, want ErrStaleDate", err)
		}

		// 3. Changing any byte of the path breaks it.
		p := []byte(path)
		for i := range p {
			if i >= 512 {
				break
			}
			orig := p[i]
			p[i] ^= 0x20 | byte(i&0x0f)<<1 // always a change
			r.PathAndQuery = string(p)
			if err := k.Verify(r, now, 0); !errors.Is(err, signer.ErrBadSignature) {
				t.Fatalf("path byte %d changed (%q): Verify = %v, want ErrBadSignature", i, p, err)
			}
			p[i] = orig
		}
		// ... as does appending to it, or a different key. (Not one that
		// differs only by trailing zero bytes: HMAC zero-pads keys shorter
		// than its block, so those are the same HMAC key.)
		r.PathAndQuery = path + "x"
		if err := k.Verify(r, now, 0); !errors.Is(err, signer.ErrBadSignature) {
			t.Fatalf("path extended: Verify = %v, want ErrBadSignature", err)
		}
		r.PathAndQuery = path
		otherRaw := append([]byte(nil), rawKey...)
		otherRaw[0] ^= 1
		other, _ := signer.NewKey(otherRaw)
		if err := other.Verify(r, now, 0); !errors.Is(err, signer.ErrBadSignature) {
			t.Fatalf("other key: Verify = %v, want ErrBadSignature", err)
		}
	})
}
