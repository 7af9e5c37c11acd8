//go:build sdkcheck

// The SDK cross-check: requests signed by the proxy inside a real Caddy are
// re-signed by Microsoft's own JS SDK code (createCommunicationAccessKeyCredentialPolicy
// from @azure/communication-common, pinned in sdkcheck/package.json), and the
// two signatures must be identical. It needs Node.js and
// `npm ci --prefix e2e/sdkcheck`, so it is built only with -tags sdkcheck:
//
//	npm ci --prefix e2e/sdkcheck
//	go test -count=1 -tags sdkcheck -run SDK ./e2e

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// sdkInput is one line of sdksign.js's input.
type sdkInput struct {
	Method     string      `json:"method"`
	URL        string      `json:"url"` // scheme://<Host as received><request-target as received>
	Headers    http.Header `json:"headers"`
	BodyBase64 string      `json:"bodyBase64"`
	Key        string      `json:"key"`
}

// sdkOutput is one line of sdksign.js's output.
type sdkOutput struct {
	Authorization    string `json:"authorization"`
	XMsContentSha256 string `json:"xMsContentSha256"`
	XMsDate          string `json:"xMsDate"`
	Host             string `json:"host"`
	DateRoundTrips   bool   `json:"dateRoundTrips"`
	SDKView          struct {
		PathAndQuery       string `json:"pathAndQuery"`
		Host               string `json:"host"`
		BodyUTF8RoundTrips bool   `json:"bodyUtf8RoundTrips"`
	} `json:"sdkView"`
	Comparable bool   `json:"comparable"`
	Error      string `json:"error"`
}

// sdkTooling finds node and sdksign.js, and checks that node_modules holds
// the pinned SDK. It fails, never skips: with -tags sdkcheck the check was
// asked for.
func sdkTooling(t *testing.T) (node, script, sdkVersion string) {
	t.Helper()
	const fix = "run `npm ci --prefix e2e/sdkcheck` from the repository root (needs Node.js >= 20 and npm)"
	dir := "sdkcheck" // go test runs in the package directory, which holds this file
	if _, file, _, ok := runtime.Caller(0); ok && filepath.IsAbs(file) {
		dir = filepath.Join(filepath.Dir(file), "sdkcheck")
	}
	script = filepath.Join(dir, "sdksign.js")
	if _, err := os.Stat(script); err != nil {
		t.Fatalf("the SDK signing script is missing: %v", err)
	}
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node not found on PATH (%v): the SDK cross-check needs Node.js; install it, then %s", err, fix)
	}
	var pkg struct {
		Version      string
		Dependencies map[string]string
	}
	readJSON := func(p string) {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatalf("%v: %s", err, fix)
		}
		if err := json.Unmarshal(b, &pkg); err != nil {
			t.Fatalf("%s: %v", p, err)
		}
	}
	const sdk = "@azure/communication-common"
	readJSON(filepath.Join(dir, "package.json"))
	pinned := pkg.Dependencies[sdk]
	if pinned == "" {
		t.Fatalf("%s does not pin %s", filepath.Join(dir, "package.json"), sdk)
	}
	installed := filepath.Join(dir, "node_modules", filepath.FromSlash(sdk), "package.json")
	if _, err := os.Stat(installed); err != nil {
		t.Fatalf("%s is not installed in %s (%v): %s", sdk, filepath.Join(dir, "node_modules"), err, fix)
	}
	readJSON(installed)
	if pkg.Version != pinned {
		t.Fatalf("node_modules has %s %s but package.json pins %s: %s", sdk, pkg.Version, pinned, fix)
	}
	return node, script, pinned
}

// runSDK feeds all inputs to one run of sdksign.js and returns its answers,
// one per input, in order.
func runSDK(t *testing.T, node, script string, inputs []sdkInput) []sdkOutput {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, script)
	cmd.Dir = filepath.Dir(script)
	pr, pw := io.Pipe()
	defer pr.Close() // unblocks the writer if node stops reading
	cmd.Stdin = pr
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	go func() {
		// streamed: the inputs hold megabytes of base64 each
		bw := bufio.NewWriterSize(pw, 1<<20)
		enc := json.NewEncoder(bw)
		for _, in := range inputs {
			if err := enc.Encode(in); err != nil {
				pw.CloseWithError(err)
				return
			}
		}
		pw.CloseWithError(bw.Flush())
	}()
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("node %s: %v\n%s", script, err, stderr.Bytes())
	}
	var res []sdkOutput
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var o sdkOutput
		if err := json.Unmarshal(sc.Bytes(), &o); err != nil {
			t.Fatalf("sdksign.js printed %q: %v", sc.Bytes(), err)
		}
		res = append(res, o)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(res) != len(inputs) {
		t.Fatalf("sdksign.js answered %d lines for %d inputs\n%s", len(res), len(inputs), stderr.Bytes())
	}
	return res
}

// largeUTF8Text is about n bytes of valid UTF-8 text with 1-, 2-, 3- and
// 4-byte characters, cut only at line ends.
func largeUTF8Text(t *testing.T, n int) []byte {
	t.Helper()
	var b bytes.Buffer
	for i := 0; b.Len() < n; i++ {
		fmt.Fprintf(&b, "line %07d: héllo wörld – ✓ 日本語テキスト 😀🎉 {\"k\":\"v\"}\n", i)
	}
	if !utf8.Valid(b.Bytes()) {
		t.Fatal("the large text body is not valid UTF-8")
	}
	return b.Bytes()
}

// TestSDKAgreesWithProxySignatures sends a matrix of requests through the
// acs_hmac transport in a real Caddy, to a plain-HTTP and a TLS (HTTP/2)
// upstream on non-default loopback ports, and has Microsoft's JS SDK policy
// re-sign every request exactly as the upstream received it. The SDK's
// Authorization and x-ms-content-sha256 must equal the proxy's, byte for byte.
//
// Only shapes the SDK sees unchanged are in the matrix (sdksign.js reports
// "comparable"); shapes left out because the SDK would sign something other
// than what goes on the wire, so no agreement is possible or expected:
//   - a query with %20 (e.g. "sp=%20"): URLSearchParams re-serialises it as "+"
//   - an empty query ("/identities?"): the SDK drops the "?"
//   - "$top" in a query key: URLSearchParams escapes it to "%24top"
//   - a query key without "=" ("?flag"): re-serialised as "flag="
//   - query characters ~ ' ! ( ) , : / @ ; and needless or lower-case escapes
//     (%41, %c3%a9): re-escaped or unescaped by the form serialiser
//   - dot segments or raw { } | in the path: normalised or escaped by WHATWG URL
//   - a Host in upper case or with the scheme's default port: lower-cased or
//     dropped by WHATWG URL (our upstreams are 127.0.0.1 on random ports)
//   - a body that is not valid UTF-8: the SDK hashes body.toString(), the
//     UTF-8 decoding with U+FFFD replacements, not the bytes sent
func TestSDKAgreesWithProxySignatures(t *testing.T) {
	node, script, sdkVersion := sdkTooling(t)

	plainKey, plainKeyB64 := newKey(t)
	tlsKey, tlsKeyB64 := newKey(t)
	plainUp := newUpstream(t, false)
	tlsUp := newUpstream(t, true)
	plainPort := freePort(t)
	tlsPort := freePort(t)
	for tlsPort == plainPort {
		tlsPort = freePort(t)
	}
	startCaddySites(t, plainPort, fmt.Sprintf(`http://:%d {
	bind 127.0.0.1
	reverse_proxy %s {
		transport acs_hmac {
			connection_string "endpoint=http://%s/;accesskey=%s"
		}
	}
}

http://:%d {
	bind 127.0.0.1
	reverse_proxy https://%s {
		transport acs_hmac {
			connection_string "endpoint=https://%s/;accesskey=%s"
			tls_trust_pool file %s
		}
	}
}
`, plainPort, plainUp.addr(), plainUp.addr(), plainKeyB64,
		tlsPort, tlsUp.addr(), tlsUp.addr(), tlsKeyB64, tlsUp.trustFile(t)))

	routes := []struct {
		name, scheme string
		port         int
		up           *upstream
		key          []byte
		keyB64       string
	}{
		{"http", "http", plainPort, plainUp, plainKey, plainKeyB64},
		{"https", "https", tlsPort, tlsUp, tlsKey, tlsKeyB64},
	}
	methods := []string{"GET", "POST", "PUT", "PATCH", "DELETE"}
	bodies := []struct {
		name string
		b    []byte
	}{
		{"empty", nil},
		{"utf8-json", []byte(`{"message":"héllo 😀 – ✓","to":["+14255550123"]}`)},
		{"3MiB-text", largeUTF8Text(t, 3<<20)},
	}
	targets := []string{
		"/sms?api-version=2021-03-07",
		"/emails:send?api-version=2023-03-31",
		"/phoneNumbers/+14255550123?api-version=2022-12-01",
		"/",
		"/a%2Fb/c%20d/caf%C3%A9?q=a+b&plus=%2B&e=",
		"/emails/operations/abc-123?api-version=2023-03-31",
	}

	type sdkCase struct {
		name   string
		in     sdkInput
		sent   *recorded // nil for controls
		expect string    // "same", or for a control what must differ
	}
	var cases []sdkCase
	for _, rt := range routes {
		for _, method := range methods {
			for _, body := range bodies {
				for _, target := range targets {
					name := fmt.Sprintf("%s %s %s (%s)", rt.name, method, target, body.name)
					raw := fmt.Sprintf("%s %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Length: %d\r\n\r\n",
						method, target, rt.port, len(body.b))
					resp := rawRequest(t, fmt.Sprintf("127.0.0.1:%d", rt.port), raw, body.b)
					got, _ := io.ReadAll(resp.Body)
					if resp.StatusCode != 200 || string(got) != `{"ok":true}` {
						t.Fatalf("%s: %d %s", name, resp.StatusCode, got)
					}
					reqs := rt.up.requests()
					rec := reqs[len(reqs)-1]
					if rec.Method != method || rec.RequestURI != target || rec.Host != rt.up.addr() || !bytes.Equal(rec.Body, body.b) {
						t.Fatalf("%s: upstream got %s %s Host %q with %d body bytes", name, rec.Method, rec.RequestURI, rec.Host, len(rec.Body))
					}
					if rt.scheme == "https" && rec.Proto != "HTTP/2.0" {
						t.Errorf("%s: upstream protocol %s, want HTTP/2.0", name, rec.Proto)
					}
					if err := independentVerify(rt.key, rec, time.Now()); err != nil {
						t.Errorf("%s: %v", name, err)
					}
					cases = append(cases, sdkCase{name: name, sent: rec, expect: "same", in: sdkInput{
						Method:     rec.Method,
						URL:        rt.scheme + "://" + rec.Host + rec.RequestURI,
						Headers:    rec.Header,
						BodyBase64: base64.StdEncoding.EncodeToString(rec.Body),
						Key:        rt.keyB64,
					}})
				}
			}
		}
	}
	if n := len(plainUp.requests()) + len(tlsUp.requests()); n != len(cases) {
		t.Fatalf("upstreams saw %d requests, sent %d", n, len(cases))
	}
	proxied := len(cases)

	// Controls, so a pass means something. Each is a proxied request altered
	// after signing, in a way the SDK still sees unchanged (still comparable),
	// so the SDK's signature must differ from the one the proxy sent.
	find := func(name string) sdkCase {
		for _, c := range cases[:proxied] {
			if c.name == name {
				return c
			}
		}
		t.Fatalf("no case %q", name)
		return sdkCase{}
	}
	bodyCtl := find("http POST /emails:send?api-version=2023-03-31 (utf8-json)")
	altered := bytes.Replace(bodyCtl.sent.Body, []byte("😀"), []byte("😁"), 1) // same length, still UTF-8
	if bytes.Equal(altered, bodyCtl.sent.Body) {
		t.Fatal("the body control did not alter the body")
	}
	bodyCtl.name = "control: body altered after signing"
	bodyCtl.in.BodyBase64 = base64.StdEncoding.EncodeToString(altered)
	bodyCtl.expect = "body"
	targetCtl := find("https GET /sms?api-version=2021-03-07 (empty)")
	targetCtl.name = "control: request-target altered after signing"
	targetCtl.in.URL = strings.Replace(targetCtl.in.URL, "2021-03-07", "2021-03-08", 1)
	targetCtl.expect = "target"
	// And the JS SDK's own published test vector (acs-hmac-signing.md), which
	// proves the script drives the pinned SDK and pins the date as intended.
	vector := sdkCase{name: "control: the JS SDK's published vector", expect: "vector", in: sdkInput{
		Method: "GET", URL: "https://example.com/testPath?testQuery=test",
		Headers: http.Header{"X-Ms-Date": {"Wed, 13 Apr 2022 18:09:12 GMT"}}, Key: "pw==",
	}}
	cases = append(cases, bodyCtl, targetCtl, vector)

	inputs := make([]sdkInput, len(cases))
	for i, c := range cases {
		inputs[i] = c.in
	}
	results := runSDK(t, node, script, inputs)

	for i, c := range cases {
		o := results[i]
		if o.Error != "" {
			t.Errorf("%s: sdksign.js: %s", c.name, o.Error)
			continue
		}
		if !o.DateRoundTrips {
			t.Errorf("%s: the SDK signed with x-ms-date %q, not the recorded one: the date pin failed", c.name, o.XMsDate)
		}
		if !o.Comparable {
			t.Errorf("%s: not comparable: the SDK sees target %q, host %q (policy set %q), body UTF-8 round-trips %v; remove this shape from the matrix",
				c.name, o.SDKView.PathAndQuery, o.SDKView.Host, o.Host, o.SDKView.BodyUTF8RoundTrips)
		}
		switch c.expect {
		case "same":
			auth, hash := c.sent.Header.Values("Authorization"), c.sent.Header.Values("X-Ms-Content-Sha256")
			if len(auth) != 1 || o.Authorization != auth[0] {
				t.Errorf("%s: Authorization differs\nproxy: %q\nSDK:   %q", c.name, auth, o.Authorization)
			}
			if len(hash) != 1 || o.XMsContentSha256 != hash[0] {
				t.Errorf("%s: x-ms-content-sha256 differs\nproxy: %q\nSDK:   %q", c.name, hash, o.XMsContentSha256)
			}
			if o.Host != c.sent.Host {
				t.Errorf("%s: the SDK set Host %q, the proxy sent %q", c.name, o.Host, c.sent.Host)
			}
		case "body":
			if o.XMsContentSha256 == c.sent.Header.Get("X-Ms-Content-Sha256") || o.Authorization == c.sent.Header.Get("Authorization") {
				t.Errorf("%s: the SDK still matches the proxy's headers: the check cannot fail", c.name)
			}
		case "target":
			if o.XMsContentSha256 != c.sent.Header.Get("X-Ms-Content-Sha256") {
				t.Errorf("%s: body hash changed though the body did not", c.name)
			}
			if o.Authorization == c.sent.Header.Get("Authorization") {
				t.Errorf("%s: the SDK still matches the proxy's Authorization: the check cannot fail", c.name)
			}
		case "vector":
			const want = "HMAC-SHA256 SignedHeaders=x-ms-date;host;x-ms-content-sha256&Signature=DGdgwggJWnQyc6EHjR/Vbqg1ES64KpD6U2XwTDDj3tU="
			if o.Authorization != want || o.XMsContentSha256 != "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=" {
				t.Errorf("%s: got %q / %q, want %q", c.name, o.Authorization, o.XMsContentSha256, want)
			}
		}
	}
	if !t.Failed() {
		t.Logf("@azure/communication-common %s re-signed %d proxied requests (%d over http, %d over https/HTTP2): all identical to the proxy's; %d controls behaved",
			sdkVersion, proxied, len(plainUp.requests()), len(tlsUp.requests()), len(cases)-proxied)
	}
}
