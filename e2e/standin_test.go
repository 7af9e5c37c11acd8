package e2e

import (
	"bufio"
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
)

// independentSign signs req the way the ACS SDKs do, written out here from
// the signing document (no code shared with package signer).
func independentSign(key []byte, req *http.Request, body []byte, at time.Time) {
	sum := sha256.Sum256(body)
	hash := base64.StdEncoding.EncodeToString(sum[:])
	date := at.UTC().Format(http.TimeFormat)
	m := hmac.New(sha256.New, key)
	m.Write([]byte(req.Method + "\n" + req.URL.RequestURI() + "\n" + date + ";" + req.URL.Host + ";" + hash))
	req.Header.Set("x-ms-date", date)
	req.Header.Set("x-ms-content-sha256", hash)
	req.Header.Set("Authorization", "HMAC-SHA256 SignedHeaders=x-ms-date;host;x-ms-content-sha256&Signature="+base64.StdEncoding.EncodeToString(m.Sum(nil)))
}

// TestStandInVerifier: acs_hmac_verify answers like ACS: 401 with an
// ACS-shaped error for anything ACS would refuse, and passes good requests on
// with their body intact.
func TestStandInVerifier(t *testing.T) {
	key, keyB64 := newKey(t)
	up := newUpstream(t, false)
	c := startCaddy(t, fmt.Sprintf(`acs_hmac_verify {
		access_key %s
	}
	reverse_proxy %s`, keyB64, up.addr()))

	body := []byte(`{"from":"+18005550100","message":"hi 😀"}`)
	type tc struct {
		name       string
		sign       bool
		key        []byte
		at         time.Time
		sendBody   []byte
		pathAfter  string // changed after signing
		wantStatus int
		wantMsg    string
	}
	otherKey, _ := newKey(t)
	cases := []tc{
		{name: "good", sign: true, key: key, at: time.Now(), sendBody: body, wantStatus: 200},
		{name: "good, 14 minutes old", sign: true, key: key, at: time.Now().Add(-14 * time.Minute), sendBody: body, wantStatus: 200},
		{name: "unsigned", wantStatus: 401, sendBody: body, wantMsg: "Denied by the resource provider."},
		{name: "wrong key", sign: true, key: otherKey, at: time.Now(), sendBody: body, wantStatus: 401, wantMsg: "Denied by the resource provider."},
		{name: "stale", sign: true, key: key, at: time.Now().Add(-16 * time.Minute), sendBody: body, wantStatus: 401, wantMsg: "Denied by the resource provider."},
		{name: "from the future", sign: true, key: key, at: time.Now().Add(16 * time.Minute), sendBody: body, wantStatus: 401, wantMsg: "Denied by the resource provider."},
		{name: "body tampered", sign: true, key: key, at: time.Now(), sendBody: []byte(`{"from":"+18005550100","message":"pay me"}`), wantStatus: 401, wantMsg: "Request 'x-ms-content-sha256' differs from generated content hash."},
		{name: "path tampered", sign: true, key: key, at: time.Now(), sendBody: body, pathAfter: "/sms?api-version=2099-01-01", wantStatus: 401, wantMsg: "Denied by the resource provider."},
	}
	wantForwarded := 0
	for _, tc := range cases {
		req, _ := http.NewRequest("POST", c.url("/sms?api-version=2021-03-07"), bytes.NewReader(tc.sendBody))
		if tc.sign {
			independentSign(tc.key, req, body, tc.at)
		}
		if tc.pathAfter != "" {
			req.URL, _ = req.URL.Parse(tc.pathAfter)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.wantStatus {
			t.Errorf("%s: status %d, want %d (%s)", tc.name, resp.StatusCode, tc.wantStatus, got)
			continue
		}
		if tc.wantStatus == 200 {
			wantForwarded++
			reqs := up.requests()
			if len(reqs) != wantForwarded || !bytes.Equal(reqs[len(reqs)-1].Body, body) {
				t.Errorf("%s: the next handler did not get the body intact", tc.name)
			}
			continue
		}
		code, msg := acsError(t, got)
		if code != "Denied" || msg != tc.wantMsg {
			t.Errorf("%s: error %q %q, want Denied %q", tc.name, code, msg, tc.wantMsg)
		}
	}
	if n := len(up.requests()); n != wantForwarded {
		t.Errorf("%d requests passed the verifier, want %d", n, wantForwarded)
	}
}

// TestProxyThroughStandIn is the quickstart's shape: proxy -> verifier, all
// in one Caddy, plus the log check: at DEBUG, neither the key, nor a
// signature, nor a body reaches the logs.
func TestProxyThroughStandIn(t *testing.T) {
	key, keyB64 := newKey(t)
	up := newUpstream(t, false)
	proxyPort, verifyPort := freePort(t), freePort(t)
	c := startCaddySites(t, proxyPort, fmt.Sprintf(`
http://:%d {
	bind 127.0.0.1
	reverse_proxy 127.0.0.1:%d {
		transport acs_hmac {
			connection_string "endpoint=http://127.0.0.1:%d/;accesskey=%s"
		}
	}
}
http://:%d {
	bind 127.0.0.1
	acs_hmac_verify {
		access_key %s
	}
	reverse_proxy %s
}`, proxyPort, verifyPort, verifyPort, keyB64, verifyPort, keyB64, up.addr()))

	marker := "body-marker-" + hex.EncodeToString(randomBytes(t, 8))
	for _, m := range []string{"GET", "POST", "PUT", "PATCH", "DELETE"} {
		status, _, got := do(t, m, c.url("/emails:send?api-version=2023-03-31&x=a+b"), []byte(`{"m":"`+marker+`"}`), nil)
		if status != 200 {
			t.Fatalf("%s through the stand-in: %d %s", m, status, got)
		}
	}
	// and one rejected at the verifier, to log a rejection too
	status, _, _ := do(t, "POST", fmt.Sprintf("http://127.0.0.1:%d/sms", verifyPort), []byte(marker), nil)
	if status != 401 {
		t.Fatalf("unsigned request to the stand-in: %d", status)
	}

	logs := c.logs(t)
	if !strings.Contains(logs, `"signed request"`) || !strings.Contains(logs, `"signature rejected"`) {
		t.Fatalf("debug logging did not run; logs:\n%s", logs)
	}
	secrets := map[string]string{
		"key (base64)":          keyB64,
		"key (unpadded base64)": strings.TrimRight(keyB64, "="),
		"key (url base64)":      base64.URLEncoding.EncodeToString(key),
		"key (hex)":             hex.EncodeToString(key),
		"body":                  marker,
	}
	for i, rec := range up.requests() {
		auth := rec.Header.Get("Authorization")
		secrets[fmt.Sprintf("signature %d", i)] = auth[strings.LastIndex(auth, "=")-43:]
	}
	for what, s := range secrets {
		if strings.Contains(logs, s) {
			t.Errorf("the %s appears in the logs", what)
		}
	}
}

// TestRetrySignsEachAttemptAfresh: the first upstream takes the request and
// drops the connection; reverse_proxy retries on the second, and the retry
// carries its own, new, valid signature over the same body.
func TestRetrySignsEachAttemptAfresh(t *testing.T) {
	key, keyB64 := newKey(t)
	good := newUpstream(t, false)

	bad, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bad.Close() })
	var (
		mu      sync.Mutex
		badReqs []*recorded
	)
	go func() {
		for {
			conn, err := bad.Accept()
			if err != nil {
				return
			}
			req, err := http.ReadRequest(bufio.NewReader(conn))
			if err == nil {
				if rec, err := record(req); err == nil {
					mu.Lock()
					badReqs = append(badReqs, rec)
					mu.Unlock()
				}
			}
			time.Sleep(1100 * time.Millisecond) // so the retry's x-ms-date is a new second
			conn.Close()
		}
	}()

	c := startCaddy(t, fmt.Sprintf(`reverse_proxy %s %s {
		lb_policy first
		lb_retries 2
		lb_retry_match {
			method POST
		}
		fail_duration 30s
		max_fails 1
		transport acs_hmac {
			access_key %s
		}
	}`, bad.Addr(), good.addr(), keyB64))

	body := randomBytes(t, 256<<10)
	status, _, got := do(t, "POST", c.url("/emails:send?api-version=2023-03-31"), body, nil)
	if status != 200 {
		t.Fatalf("status %d: %s", status, got)
	}
	mu.Lock()
	first := badReqs
	mu.Unlock()
	second := good.requests()
	if len(first) != 1 || len(second) != 1 {
		t.Fatalf("attempts: %d at the failing upstream, %d at the good one; want 1 and 1", len(first), len(second))
	}
	for i, rec := range []*recorded{first[0], second[0]} {
		if !bytes.Equal(rec.Body, body) {
			t.Errorf("attempt %d: body not replayed intact (%d bytes)", i+1, len(rec.Body))
		}
		if err := independentVerify(key, rec, time.Now()); err != nil {
			t.Errorf("attempt %d: %v", i+1, err)
		}
	}
	if first[0].Header.Get("X-Ms-Date") == second[0].Header.Get("X-Ms-Date") ||
		first[0].Header.Get("Authorization") == second[0].Header.Get("Authorization") {
		t.Error("the retry reused the first attempt's date or signature")
	}
}

// TestKeyFileRotation: the key file is re-read when it changes, with no
// restart; a bad write keeps the last good key serving.
func TestKeyFileRotation(t *testing.T) {
	keyA, keyAB64 := newKey(t)
	keyB, keyBB64 := newKey(t)
	up := newUpstream(t, false)
	dir := t.TempDir()
	path := filepath.Join(dir, "acs")
	write := func(content string) {
		// atomic replace, as Kubernetes and the CSI driver do
		tmp := filepath.Join(dir, ".tmp")
		if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
	}
	write(fmt.Sprintf("endpoint=http://%s/;accesskey=%s\n", up.addr(), keyAB64))
	c := startCaddy(t, fmt.Sprintf(`reverse_proxy %s {
		transport acs_hmac {
			key_file %s
		}
	}`, up.addr(), path))

	last := func() *recorded {
		status, _, got := do(t, "POST", c.url("/sms"), []byte(`{}`), nil)
		if status != 200 {
			t.Fatalf("status %d: %s", status, got)
		}
		r := up.requests()
		return r[len(r)-1]
	}
	if err := independentVerify(keyA, last(), time.Now()); err != nil {
		t.Fatalf("before rotation: %v", err)
	}

	write(keyBB64 + "\n") // a bare key this time
	deadline := time.Now().Add(10 * time.Second)
	for independentVerify(keyB, last(), time.Now()) != nil {
		if time.Now().After(deadline) {
			t.Fatal("the rotated key was not picked up within 10s")
		}
		time.Sleep(100 * time.Millisecond)
	}

	garbage := "this-is-not-a-key-" + hex.EncodeToString(randomBytes(t, 4))
	write(garbage)
	time.Sleep(2500 * time.Millisecond) // more than two polls
	if err := independentVerify(keyB, last(), time.Now()); err != nil {
		t.Fatalf("after a bad write the last good key must keep serving: %v", err)
	}
	logs := c.logs(t)
	if !strings.Contains(logs, "keeping the last good key") {
		t.Error("the bad write was not logged")
	}
	for _, s := range []string{garbage, keyAB64, keyBB64} {
		if strings.Contains(logs, s) {
			t.Errorf("logs contain %q", s)
		}
	}
}

// TestBadKeyRefusedAtLoad: Caddy refuses a config whose key is missing or
// malformed, with a message that names the problem and not the key.
func TestBadKeyRefusedAtLoad(t *testing.T) {
	badKey := "c2VjcmV0LWJ1dC1ub3QtYmFzZTY0!!*"
	for _, tc := range []struct{ source, want string }{
		{"access_key " + badKey, "not valid base64"},
		{`connection_string "endpoint=https://contoso.communication.azure.com/;accesskey=` + badKey + `"`, "accesskey"},
		{`connection_string "accesskey=c2VjcmV0"`, "missing endpoint"},
		{`connection_string "endpoint=https://contoso.communication.azure.com/"`, "missing accesskey"},
		{`access_key {env.ACS_TEST_SURELY_UNSET_VARIABLE}`, "ACS_TEST_SURELY_UNSET_VARIABLE"},
	} {
		cfg, err := adapt(fmt.Sprintf("{\n\tadmin off\n}\nhttp://127.0.0.1:%d {\n\treverse_proxy https://contoso.communication.azure.com {\n\t\ttransport acs_hmac {\n\t\t\t%s\n\t\t}\n\t}\n}\n", freePort(t), tc.source))
		if err != nil {
			t.Fatalf("%s: adapt: %v", tc.source, err)
		}
		err = caddy.Load(cfg, true)
		if err == nil {
			_ = caddy.Stop()
			t.Errorf("%s: config loaded", tc.source)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %q does not say %q", tc.source, err, tc.want)
		}
		if strings.Contains(err.Error(), "c2VjcmV0") {
			t.Errorf("%s: error contains the key: %q", tc.source, err)
		}
	}
}
