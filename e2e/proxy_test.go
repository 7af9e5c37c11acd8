package e2e

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// newKey returns a random access key as raw bytes and as the portal shows it.
func newKey(t *testing.T) ([]byte, string) {
	t.Helper()
	k := make([]byte, 64)
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	return k, base64.StdEncoding.EncodeToString(k)
}

func randomBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// acsError decodes the {"error":{"code","message"}} shape.
func acsError(t *testing.T, body []byte) (code, message string) {
	t.Helper()
	var e struct {
		Error struct{ Code, Message string }
	}
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatalf("not an ACS-shaped JSON error: %q: %v", body, err)
	}
	return e.Error.Code, e.Error.Message
}

// TestSignedRequestsOfEveryShape sends requests of every method, body kind
// and request-target shape through the proxy, raw on the wire so no client
// library normalises them, and checks each one as ACS would.
func TestSignedRequestsOfEveryShape(t *testing.T) {
	key, keyB64 := newKey(t)
	up := newUpstream(t, false)
	c := startCaddy(t, fmt.Sprintf(`reverse_proxy %s {
		transport acs_hmac {
			connection_string "endpoint=http://%s/;accesskey=%s"
		}
	}`, up.addr(), up.addr(), keyB64))

	bodies := map[string][]byte{
		"empty":  nil,
		"utf8":   []byte(`{"message":"héllo 😀 – ✓","to":["+14255550123"]}`),
		"binary": append([]byte{0, 0xff, '\r', '\n', 0}, randomBytes(t, 4096)...),
		"5MiB":   randomBytes(t, 5<<20),
	}
	targets := []string{
		"/sms?api-version=2021-03-07",
		"/emails:send?api-version=2023-03-31",
		"/a%2Fb/c%20d/caf%C3%A9?q=a+b&plus=%2B&sp=%20&e=",
		"/phoneNumbers/+14255550123?api-version=2022-12-01",
		"/identities?",
		"/",
		"/chat/threads/19%3Aabc%40thread.v2/messages?api-version=2021-09-07&$top=5",
	}
	n := 0
	for _, method := range []string{"GET", "POST", "PUT", "PATCH", "DELETE"} {
		for bodyName, body := range bodies {
			for i, target := range targets {
				if bodyName == "5MiB" && i > 1 {
					continue // the big body needs only two targets to prove itself
				}
				n++
				raw := fmt.Sprintf("%s %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Length: %d\r\nUser-Agent: legacy-app/1.0\r\n\r\n",
					method, target, c.port, len(body))
				resp := rawRequest(t, fmt.Sprintf("127.0.0.1:%d", c.port), raw, body)
				got, _ := io.ReadAll(resp.Body)
				if resp.StatusCode != 200 || string(got) != `{"ok":true}` {
					t.Fatalf("%s %s (%s): %d %s", method, target, bodyName, resp.StatusCode, got)
				}
				reqs := up.requests()
				rec := reqs[len(reqs)-1]
				if rec.Method != method || rec.RequestURI != target {
					t.Errorf("upstream got %s %s, client sent %s %s", rec.Method, rec.RequestURI, method, target)
				}
				if !bytes.Equal(rec.Body, body) {
					t.Errorf("%s %s (%s): body changed on the way: %d bytes in, %d out", method, target, bodyName, len(body), len(rec.Body))
				}
				if rec.Host != up.addr() {
					t.Errorf("Host %q, want the endpoint's %q", rec.Host, up.addr())
				}
				if err := independentVerify(key, rec, time.Now()); err != nil {
					t.Errorf("%s %s (%s): ACS would reject: %v", method, target, bodyName, err)
				}
			}
		}
	}
	if got := len(up.requests()); got != n {
		t.Errorf("upstream saw %d requests, want %d", got, n)
	}
}

// TestTLSUpstreamOverHTTP2 is the production shape: HTTPS to the endpoint,
// HTTP/2 negotiated, a non-default port that must be signed in the Host.
func TestTLSUpstreamOverHTTP2(t *testing.T) {
	key, keyB64 := newKey(t)
	up := newUpstream(t, true)
	c := startCaddy(t, fmt.Sprintf(`reverse_proxy https://%s {
		transport acs_hmac {
			connection_string "endpoint=https://%s;accesskey=%s"
			tls_trust_pool file %s
		}
	}`, up.addr(), up.addr(), keyB64, up.trustFile(t)))

	body := []byte(`{"senderAddress":"DoNotReply@contoso.net","content":{"subject":"😀"}}`)
	status, _, got := do(t, "POST", c.url("/emails:send?api-version=2023-03-31"), body, http.Header{"Content-Type": {"application/json"}})
	if status != 200 {
		t.Fatalf("status %d: %s", status, got)
	}
	rec := up.requests()[0]
	if rec.Proto != "HTTP/2.0" {
		t.Errorf("upstream protocol %s, want HTTP/2.0", rec.Proto)
	}
	if rec.Host != up.addr() {
		t.Errorf("Host %q, want %q", rec.Host, up.addr())
	}
	if err := independentVerify(key, rec, time.Now()); err != nil {
		t.Error(err)
	}
}

// TestBareKeySignsHostAsSent: with a bare key, the Host that goes on the wire
// is signed, whether it is the client's or set by header_up.
func TestBareKeySignsHostAsSent(t *testing.T) {
	key, keyB64 := newKey(t)
	up := newUpstream(t, false)
	c := startCaddy(t, fmt.Sprintf(`handle /override/* {
		reverse_proxy %s {
			header_up Host contoso.communication.azure.com
			transport acs_hmac {
				access_key %s
			}
		}
	}
	handle {
		reverse_proxy %s {
			transport acs_hmac {
				access_key %s
			}
		}
	}`, up.addr(), keyB64, up.addr(), keyB64))

	for _, tc := range []struct{ path, clientHost, wantHost string }{
		{"/sms", "legacy.internal:8080", "legacy.internal:8080"},
		{"/override/sms", "legacy.internal:8080", "contoso.communication.azure.com"},
	} {
		raw := fmt.Sprintf("GET %s HTTP/1.1\r\nHost: %s\r\n\r\n", tc.path, tc.clientHost)
		resp := rawRequest(t, fmt.Sprintf("127.0.0.1:%d", c.port), raw, nil)
		if resp.StatusCode != 200 {
			t.Fatalf("%s: status %d", tc.path, resp.StatusCode)
		}
		reqs := up.requests()
		rec := reqs[len(reqs)-1]
		if rec.Host != tc.wantHost {
			t.Errorf("%s: Host %q, want %q", tc.path, rec.Host, tc.wantHost)
		}
		if err := independentVerify(key, rec, time.Now()); err != nil {
			t.Errorf("%s: %v", tc.path, err)
		}
	}
}

// TestClientAuthHeadersNotForwarded: whatever the client sends as auth, the
// upstream sees only the proxy's fresh signature.
func TestClientAuthHeadersNotForwarded(t *testing.T) {
	key, keyB64 := newKey(t)
	up := newUpstream(t, false)
	c := startCaddy(t, fmt.Sprintf(`reverse_proxy %s {
		transport acs_hmac {
			connection_string "endpoint=http://%s;accesskey=%s"
		}
	}`, up.addr(), up.addr(), keyB64))

	stale := "Mon, 01 Jan 2001 00:00:00 GMT"
	status, _, _ := do(t, "POST", c.url("/sms?api-version=2021-03-07"), []byte(`{"a":1}`), http.Header{
		"Authorization":       {"Bearer stolen-token", "HMAC-SHA256 SignedHeaders=x&Signature=forged"},
		"X-Ms-Date":           {stale},
		"Date":                {stale},
		"X-Ms-Content-Sha256": {"forged-hash"},
		"X-Keep-Me":           {"yes"},
	})
	if status != 200 {
		t.Fatalf("status %d", status)
	}
	rec := up.requests()[0]
	for _, h := range []string{"Authorization", "X-Ms-Date", "X-Ms-Content-Sha256"} {
		for _, v := range rec.Header.Values(h) {
			if strings.Contains(v, "stolen") || strings.Contains(v, "forged") || v == stale {
				t.Errorf("client-sent %s %q was forwarded", h, v)
			}
		}
	}
	if v := rec.Header.Values("Date"); len(v) != 0 {
		t.Errorf("client-sent Date forwarded: %q", v)
	}
	if rec.Header.Get("X-Keep-Me") != "yes" {
		t.Error("an ordinary header was dropped")
	}
	if err := independentVerify(key, rec, time.Now()); err != nil {
		t.Error(err)
	}
}

// TestOversizeBodyRefusedBeforeUpstream: 413 with a JSON reason, and the
// upstream is never contacted, whether the length is declared or not.
func TestOversizeBodyRefusedBeforeUpstream(t *testing.T) {
	key, keyB64 := newKey(t)
	up := newUpstream(t, false)
	c := startCaddy(t, fmt.Sprintf(`reverse_proxy %s {
		transport acs_hmac {
			access_key %s
			max_body_size 1KiB
		}
	}`, up.addr(), keyB64))

	big := randomBytes(t, 1025)
	status, _, body := do(t, "POST", c.url("/emails:send"), big, nil)
	if status != 413 {
		t.Fatalf("declared length: status %d, want 413", status)
	}
	if code, _ := acsError(t, body); code != "RequestBodyTooLarge" {
		t.Errorf("code %q", code)
	}
	// chunked: no Content-Length, so the proxy finds out while reading
	req, _ := http.NewRequest("POST", c.url("/emails:send"), io.MultiReader(bytes.NewReader(big)))
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 413 {
		t.Fatalf("chunked: status %d, want 413", resp.StatusCode)
	}
	if n := len(up.requests()); n != 0 {
		t.Fatalf("upstream contacted %d times for oversize bodies", n)
	}
	// exactly the limit passes, chunked or not
	status, _, _ = do(t, "POST", c.url("/emails:send"), big[:1024], nil)
	req, _ = http.NewRequest("POST", c.url("/emails:send"), io.MultiReader(bytes.NewReader(big[:1024])))
	resp, err = client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if status != 200 || resp.StatusCode != 200 {
		t.Fatalf("body at the limit: %d, chunked %d", status, resp.StatusCode)
	}
	for _, rec := range up.requests() {
		if len(rec.Body) != 1024 || rec.ContentLength != 1024 {
			t.Errorf("forwarded %d bytes with Content-Length %d", len(rec.Body), rec.ContentLength)
		}
		if err := independentVerify(key, rec, time.Now()); err != nil {
			t.Error(err)
		}
	}
}

// TestForeignUpstreamRefused: a connection string's key never travels to, or
// signs for, a server that is not its endpoint.
func TestForeignUpstreamRefused(t *testing.T) {
	_, keyB64 := newKey(t)
	up := newUpstream(t, false)
	c := startCaddy(t, fmt.Sprintf(`handle /other-host/* {
		reverse_proxy %s {
			transport acs_hmac {
				connection_string "endpoint=https://contoso.communication.azure.com/;accesskey=%s"
			}
		}
	}
	handle /plain-http/* {
		reverse_proxy %s {
			transport acs_hmac {
				connection_string "endpoint=https://%s/;accesskey=%s"
			}
		}
	}`, up.addr(), keyB64, up.addr(), up.addr(), keyB64))

	for _, path := range []string{"/other-host/sms", "/plain-http/sms"} {
		status, hdr, body := do(t, "POST", c.url(path), []byte(`{"message":"hi"}`), nil)
		if status != http.StatusBadGateway {
			t.Errorf("%s: status %d, want 502", path, status)
		}
		if !strings.HasPrefix(hdr.Get("Content-Type"), "application/json") {
			t.Errorf("%s: content type %q", path, hdr.Get("Content-Type"))
		}
		if code, _ := acsError(t, body); code != "UpstreamNotEndpoint" {
			t.Errorf("%s: code %q", path, code)
		}
	}
	if n := len(up.requests()); n != 0 {
		t.Fatalf("a foreign upstream was contacted %d times", n)
	}
}

// TestRedirectsNotFollowed: a signed request is never replayed to wherever a
// redirect points; the client gets the redirect.
func TestRedirectsNotFollowed(t *testing.T) {
	_, keyB64 := newKey(t)
	elsewhere := newUpstream(t, false)
	redirecting := httptestRedirect(t, "http://"+elsewhere.addr()+"/stolen")
	c := startCaddy(t, fmt.Sprintf(`reverse_proxy %s {
		transport acs_hmac {
			connection_string "endpoint=http://%s;accesskey=%s"
		}
	}`, redirecting, redirecting, keyB64))

	status, hdr, _ := do(t, "POST", c.url("/sms"), []byte(`{"message":"hi"}`), nil)
	if status != http.StatusTemporaryRedirect || !strings.HasSuffix(hdr.Get("Location"), "/stolen") {
		t.Fatalf("status %d, Location %q: want the 307 passed back", status, hdr.Get("Location"))
	}
	if n := len(elsewhere.requests()); n != 0 {
		t.Fatalf("the redirect target was contacted %d times", n)
	}
}

// httptestRedirect starts a server that answers every request with a 307 to
// target, and returns its host:port.
func httptestRedirect(t *testing.T, target string) string {
	t.Helper()
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		http.Redirect(w, r, target, http.StatusTemporaryRedirect)
	}))
	t.Cleanup(s.Close)
	return s.Listener.Addr().String()
}
