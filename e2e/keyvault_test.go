package e2e

// End-to-end tests of the key_vault key source: a real Caddy instance, the
// plugin's real azsecrets/azidentity code path, the fake Key Vault over TLS on
// loopback (401 challenge, then GET /secrets/{name}/{version}) and the App
// Service managed identity endpoint reached through IDENTITY_ENDPOINT and
// IDENTITY_HEADER (see vault_harness_test.go).
//
// Every test uses `credential managed_identity <fresh client ID>`, so its
// token is its own (MSAL caches managed identity tokens process-wide), and a
// fresh fake vault, so its fetchers are its own (they are keyed by vault,
// secret and credential).

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
)

// ---------------------------------------------------------------------------
// Helpers.

// kvUpstream stands in for an ACS resource whose keys can be regenerated: it
// checks every request with independentVerify against the keys it knows, and
// answers 200 if the key that signed it is currently valid, otherwise 401
// with ACS's {"error":{"code":"Denied",...}}, as ACS does the moment a key is
// regenerated. Every request is recorded with the key that signed it and the
// answer it got.
type kvUpstream struct {
	srv *httptest.Server

	mu    sync.Mutex
	keys  map[string][]byte // name -> key, for telling which key signed
	valid map[string]bool   // names of the keys accepted now
	hits  []kvHit

	// hold401s: 401 answers wait until this many are pending (then all go).
	holdN, held int
	gate        chan struct{}
}

// kvHit is one request as the upstream received and answered it.
type kvHit struct {
	id     string // the request's "id" query parameter, if any
	path   string
	key    string // name of the key whose signature verified; "" none
	err    error  // why no known key verified it
	status int
	rec    *recorded
}

const kvDeniedBody = `{"error":{"code":"Denied","message":"Denied by the resource provider."}}`

func newKVUpstream(t *testing.T, keys map[string][]byte, valid ...string) *kvUpstream {
	t.Helper()
	u := &kvUpstream{keys: keys}
	u.accept(valid...)
	u.srv = httptest.NewServer(http.HandlerFunc(u.serve))
	t.Cleanup(u.srv.Close)
	return u
}

func (u *kvUpstream) serve(w http.ResponseWriter, r *http.Request) {
	rec, err := record(r)
	if err != nil {
		http.Error(w, err.Error(), 400)
		return
	}
	h := kvHit{id: r.URL.Query().Get("id"), path: r.URL.Path, rec: rec, status: http.StatusUnauthorized}
	now := time.Now()
	u.mu.Lock()
	for name, k := range u.keys {
		if err := independentVerify(k, rec, now); err == nil {
			h.key = name
			break
		} else {
			h.err = err
		}
	}
	if h.key != "" {
		h.err = nil
		if u.valid[h.key] {
			h.status = http.StatusOK
		}
	}
	u.hits = append(u.hits, h)
	var gate chan struct{}
	if h.status != http.StatusOK && u.gate != nil {
		gate = u.gate
		if u.held++; u.held == u.holdN {
			close(u.gate)
			u.gate = nil
		}
	}
	u.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-time.After(5 * time.Second):
		}
	}

	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Signed-With", h.key)
	w.WriteHeader(h.status)
	if h.status == http.StatusOK {
		_, _ = io.WriteString(w, `{"ok":true}`)
	} else {
		_, _ = io.WriteString(w, kvDeniedBody)
	}
}

// hold401s makes the next n refusals wait until all n are pending, so that
// they reach the proxy together however the requests were scheduled.
func (u *kvUpstream) hold401s(n int) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.holdN, u.held, u.gate = n, 0, make(chan struct{})
}

// accept makes exactly these keys valid from now on.
func (u *kvUpstream) accept(names ...string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.valid = map[string]bool{}
	for _, n := range names {
		u.valid[n] = true
	}
}

func (u *kvUpstream) addr() string { return u.srv.Listener.Addr().String() }

func (u *kvUpstream) snapshot() []kvHit {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]kvHit(nil), u.hits...)
}

func (u *kvUpstream) count() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.hits)
}

// last returns the most recent hit.
func (u *kvUpstream) last(t *testing.T) kvHit {
	t.Helper()
	h := u.snapshot()
	if len(h) == 0 {
		t.Fatal("the upstream received no request")
	}
	return h[len(h)-1]
}

// kvSource is a key_vault subdirective with a managed identity credential.
func kvSource(secretURL, clientID, refresh string) string {
	return fmt.Sprintf(`key_vault %s {
				credential managed_identity %s
				refresh %s
				disable_challenge_resource_verification
			}`, secretURL, clientID, refresh)
}

// kvProxy is a reverse_proxy to upstream through the acs_hmac transport
// with the given key source subdirective.
func kvProxy(upstream, source string) string {
	return fmt.Sprintf(`reverse_proxy %s {
		transport acs_hmac {
			%s
		}
	}`, upstream, source)
}

// kvConnStr is a connection string for an endpoint on plain-HTTP loopback.
func kvConnStr(addr, keyB64 string) string {
	return "endpoint=http://" + addr + "/;accesskey=" + keyB64
}

// kvSite is one site block on a loopback port, as startCaddy writes it.
func kvSite(port int, body string) string {
	return fmt.Sprintf("http://:%d {\n\tbind 127.0.0.1\n\t%s\n}\n", port, body)
}

// kvCaddyfile is a whole Caddyfile with the harness's global options.
func kvCaddyfile(logFile, sites string) string {
	return fmt.Sprintf(`{
	admin off
	auto_https off
	persist_config off
	log {
		output file %s
		level DEBUG
	}
}

%s
`, logFile, sites)
}

// kvLoad adapts and loads a Caddyfile, returning the error instead of failing.
func kvLoad(caddyfile string) error {
	cfg, err := adapt(caddyfile)
	if err != nil {
		return fmt.Errorf("adapt: %w", err)
	}
	return caddy.Load(cfg, true)
}

// kvReload loads new sites into the running instance c (same global options).
// caddy.Load returns once the old servers have begun shutting down, which
// closes their connections a moment later; a POST is not retried on a dead
// connection, so the test clients wait that moment out and drop them.
func kvReload(c *caddyInstance, sites string) error {
	err := kvLoad(kvCaddyfile(c.logFile, sites))
	time.Sleep(100 * time.Millisecond)
	kvClient.CloseIdleConnections()
	client.CloseIdleConnections()
	return err
}

// kvClient is safe for concurrent use from test goroutines (the harness's do
// calls t.Fatal) and keeps enough idle connections for them.
var kvClient = &http.Client{
	Timeout:   30 * time.Second,
	Transport: &http.Transport{DisableCompression: true, MaxIdleConnsPerHost: 64},
	CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	},
}

type kvResponse struct {
	status int
	header http.Header
	body   []byte
}

func kvSend(method, url string, body []byte) (kvResponse, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		return kvResponse{}, err
	}
	resp, err := kvClient.Do(req)
	if err != nil {
		return kvResponse{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return kvResponse{}, err
	}
	return kvResponse{resp.StatusCode, resp.Header, b}, nil
}

// kvSignedWith sends one POST and returns the name of the key the upstream
// found on it (the request must succeed).
func kvSignedWith(t *testing.T, url string) string {
	t.Helper()
	r, err := kvSend("POST", url, []byte(`{"to":["+14255550123"]}`))
	if err != nil {
		t.Fatal(err)
	}
	if r.status != 200 {
		t.Fatalf("POST %s: %d %s", url, r.status, r.body)
	}
	return r.header.Get("X-Signed-With")
}

// kvEventually polls cond every 10ms until it holds or timeout passes.
func kvEventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// kvKeyForms are the ways a key could leak: base64 (padded, unpadded, URL)
// and hex.
func kvKeyForms(name string, key []byte) map[string]string {
	b64 := base64.StdEncoding.EncodeToString(key)
	return map[string]string{
		name + " (base64)":          b64,
		name + " (unpadded base64)": strings.TrimRight(b64, "="),
		name + " (url base64)":      base64.URLEncoding.EncodeToString(key),
		name + " (hex)":             hex.EncodeToString(key),
		name + " (HEX)":             strings.ToUpper(hex.EncodeToString(key)),
	}
}

// kvNoLeak fails if text contains any of secrets.
func kvNoLeak(t *testing.T, where, text string, secrets map[string]string) {
	t.Helper()
	for what, s := range secrets {
		if s != "" && strings.Contains(text, s) {
			t.Errorf("%s contain the %s", where, what)
		}
	}
}

// kvFetcherGoroutines counts goroutines running a vault fetcher's refresh
// loop, from a full goroutine dump.
func kvFetcherGoroutines() int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	count := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "(*vaultFetcher).run(") {
			count++
		}
	}
	return count
}

// kvGoroutineDump returns the dump of every goroutine, for failure messages.
func kvGoroutineDump() string {
	buf := make([]byte, 4<<20)
	return string(buf[:runtime.Stack(buf, true)])
}

// ---------------------------------------------------------------------------
// Tests.

// TestKeyVaultLatestAndPinnedVersions: in one Caddy, the unversioned secret
// URL signs with the newest version and follows rotation; the versioned URL
// stays pinned. The token comes from the managed identity endpoint, for the
// configured client ID.
func TestKeyVaultLatestAndPinnedVersions(t *testing.T) {
	k1, k1b := newKey(t)
	k2, k2b := newKey(t)
	k3, k3b := newKey(t)
	fv := newFakeVault(t)
	v1 := fv.setSecret("acs-key", k1b)
	v2 := fv.setSecret("acs-key", k2b)
	up := newKVUpstream(t, map[string][]byte{"k1": k1, "k2": k2, "k3": k3}, "k1", "k2", "k3")
	id := uniqueClientID()
	c := startCaddy(t, fmt.Sprintf(`handle /latest/* {
		%s
	}
	handle /pinned/* {
		%s
	}`, kvProxy(up.addr(), kvSource(fv.secretURL("acs-key", ""), id, "200ms")),
		kvProxy(up.addr(), kvSource(fv.secretURL("acs-key", v1), id, "200ms"))))

	if got := kvSignedWith(t, c.url("/latest/sms")); got != "k2" {
		t.Fatalf("latest: signed with %q, want k2 (version %s)", got, v2)
	}
	if got := kvSignedWith(t, c.url("/pinned/sms")); got != "k1" {
		t.Fatalf("pinned: signed with %q, want k1 (version %s)", got, v1)
	}
	for _, h := range up.snapshot() {
		if err := independentVerify(map[string][]byte{"k1": k1, "k2": k2}[h.key], h.rec, time.Now()); err != nil {
			t.Errorf("%s: %v", h.path, err)
		}
	}

	// The managed identity was really used: the token endpoint was asked for
	// this client ID, and the vault saw its token.
	if calls := sharedIdentity.callsFor(id); len(calls) == 0 || !calls[0].HeaderOK || calls[0].Resource != vaultResource {
		t.Fatalf("token endpoint calls for %s: %+v", id, calls)
	}
	var sawLatest, sawPinned bool
	for _, r := range fv.requests() {
		if r.Outcome != outcomeOK {
			continue
		}
		if r.ClientID != id {
			t.Errorf("vault request with the token of %q, want %q", r.ClientID, id)
		}
		switch r.Version {
		case "":
			sawLatest = sawLatest || r.Served == v2
		case v1:
			sawPinned = true
		default:
			t.Errorf("vault request for version %q", r.Version)
		}
	}
	if !sawLatest || !sawPinned {
		t.Fatalf("vault requests %+v", fv.requests())
	}

	// A new version: the unversioned source follows it, the pinned one does not.
	v3 := fv.setSecret("acs-key", k3b)
	kvEventually(t, 5*time.Second, "latest picks up version "+v3, func() bool {
		return kvSignedWith(t, c.url("/latest/sms")) == "k3"
	})
	if got := kvSignedWith(t, c.url("/pinned/sms")); got != "k1" {
		t.Fatalf("pinned after rotation: signed with %q, want k1", got)
	}
	for _, r := range fv.requests() {
		if r.Version == v1 && r.Outcome == outcomeOK && r.Served != v1 {
			t.Errorf("pinned GET served %s", r.Served)
		}
	}
}

// TestKeyVaultConnectionStringAndBareKey: a secret holding a connection
// string signs and sends the endpoint's Host whatever the client sent; a bare
// key signs the Host as sent; a connection string for another endpoint is
// refused before any upstream is contacted.
func TestKeyVaultConnectionStringAndBareKey(t *testing.T) {
	k1, k1b := newKey(t)
	k2, k2b := newKey(t)
	_, k3b := newKey(t)
	fv := newFakeVault(t)
	up := newKVUpstream(t, map[string][]byte{"k1": k1, "k2": k2}, "k1", "k2")
	fv.setSecret("acs-cs", kvConnStr(up.addr(), k1b))
	fv.setSecret("acs-bare", k2b)
	fv.setSecret("acs-foreign", "endpoint=https://contoso.communication.azure.com/;accesskey="+k3b)
	id := uniqueClientID()
	c := startCaddy(t, fmt.Sprintf(`handle /cs/* {
		%s
	}
	handle /bare/* {
		%s
	}
	handle /foreign/* {
		%s
	}`, kvProxy(up.addr(), kvSource(fv.secretURL("acs-cs", ""), id, "1h")),
		kvProxy(up.addr(), kvSource(fv.secretURL("acs-bare", ""), id, "1h")),
		kvProxy(up.addr(), kvSource(fv.secretURL("acs-foreign", ""), id, "1h"))))

	addr := fmt.Sprintf("127.0.0.1:%d", c.port)
	send := func(path string) *http.Response {
		body := []byte(`{"message":"hi"}`)
		return rawRequest(t, addr, fmt.Sprintf("POST %s HTTP/1.1\r\nHost: legacy-app.internal:8080\r\nContent-Length: %d\r\nConnection: close\r\n\r\n", path, len(body)), body)
	}

	if resp := send("/cs/sms?api-version=2021-03-07"); resp.StatusCode != 200 {
		t.Fatalf("connection string: %d", resp.StatusCode)
	}
	h := up.last(t)
	if h.key != "k1" || h.rec.Host != up.addr() {
		t.Fatalf("connection string: signed with %q (%v), Host %q; want k1 and the endpoint's Host %q", h.key, h.err, h.rec.Host, up.addr())
	}

	if resp := send("/bare/sms?api-version=2021-03-07"); resp.StatusCode != 200 {
		t.Fatalf("bare key: %d", resp.StatusCode)
	}
	h = up.last(t)
	if h.key != "k2" || h.rec.Host != "legacy-app.internal:8080" {
		t.Fatalf("bare key: signed with %q (%v), Host %q; want k2 and the Host as sent", h.key, h.err, h.rec.Host)
	}

	before := up.count()
	resp := send("/foreign/sms")
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("connection string for another endpoint: %d %s", resp.StatusCode, b)
	}
	if code, _ := acsError(t, b); code != "UpstreamNotEndpoint" {
		t.Fatalf("code %q", code)
	}
	if up.count() != before {
		t.Fatal("the upstream was contacted with a key for another endpoint")
	}
}

// TestKeyVaultRotationMidTraffic: while clients send continuously, the
// secret is rotated twice and the upstream stops accepting the old key; no
// client ever sees a failure. A request that got 401 because it was signed
// with a revoked key was replayed once with the new key.
//
// Phase 1 is the gentle runbook: the new key goes to the vault, and the old
// key is regenerated only once the proxy is seen using the new one. Phase 2
// is the harsh one: the vault gets the new key and the old key stops working
// at the same moment, so requests in flight are signed with a key that is
// already refused.
func TestKeyVaultRotationMidTraffic(t *testing.T) {
	keys := map[string][]byte{}
	b64 := map[string]string{}
	for _, n := range []string{"k1", "k2", "k3"} {
		keys[n], b64[n] = newKey(t)
	}
	up := newKVUpstream(t, keys, "k1", "k2")
	fv := newFakeVault(t)
	fv.setSecret("acs-key", kvConnStr(up.addr(), b64["k1"]))
	c := startCaddy(t, kvProxy(up.addr(), kvSource(fv.secretURL("acs-key", ""), uniqueClientID(), "200ms")))
	t.Cleanup(kvClient.CloseIdleConnections)

	const (
		clients      = 8
		perClientMax = 3000 // bounds the run however fast the machine is
	)
	var (
		stop     = make(chan struct{})
		wg       sync.WaitGroup
		sent     atomic.Int64
		failMu   sync.Mutex
		failures []string
	)
	for g := 0; g < clients; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < perClientMax; i++ {
				select {
				case <-stop:
					return
				default:
				}
				id := fmt.Sprintf("%d-%d", g, i)
				r, err := kvSend("POST", c.url("/sms?api-version=2021-03-07&id="+id), []byte(`{"id":"`+id+`"}`))
				sent.Add(1)
				if err != nil || r.status != 200 {
					failMu.Lock()
					failures = append(failures, fmt.Sprintf("request %s: %v %d %s", id, err, r.status, r.body))
					failMu.Unlock()
				}
			}
		}()
	}
	stopped := false
	halt := func() {
		if !stopped {
			stopped = true
			close(stop)
			wg.Wait()
		}
	}
	defer halt()
	// usedSince reports whether a request signed with key got a 200 after
	// the first n hits.
	usedSince := func(n int, key string) func() bool {
		return func() bool {
			h := up.snapshot()
			for _, x := range h[min(n, len(h)):] {
				if x.key == key && x.status == 200 {
					return true
				}
			}
			return false
		}
	}

	kvEventually(t, 10*time.Second, "traffic flowing", func() bool { return up.count() >= 50 })

	// Phase 1.
	mark1 := up.count()
	fv.setSecret("acs-key", kvConnStr(up.addr(), b64["k2"]))
	kvEventually(t, 5*time.Second, "the proxy uses k2", usedSince(mark1, "k2"))
	revoke1 := up.count()
	up.accept("k2") // k1 regenerated
	kvEventually(t, 10*time.Second, "traffic after revoking k1", func() bool { return up.count() >= revoke1+200 })

	// Phase 2.
	mark2 := up.count()
	fv.setSecret("acs-key", kvConnStr(up.addr(), b64["k3"]))
	up.accept("k3") // k2 regenerated at once
	kvEventually(t, 5*time.Second, "the proxy uses k3", usedSince(mark2, "k3"))
	end2 := up.count()
	kvEventually(t, 10*time.Second, "traffic after revoking k2", func() bool { return up.count() >= end2+200 })
	halt()

	failMu.Lock()
	for i, f := range failures {
		if i == 10 {
			t.Errorf("... %d failures in all", len(failures))
			break
		}
		t.Error(f)
	}
	failMu.Unlock()

	hits := up.snapshot()
	byID := map[string][]kvHit{}
	for _, h := range hits {
		if h.id == "" {
			t.Errorf("upstream request without id: %s", h.rec.RequestURI)
			continue
		}
		byID[h.id] = append(byID[h.id], h)
	}
	if int64(len(byID)) != sent.Load() {
		t.Errorf("%d client requests, %d reached the upstream", sent.Load(), len(byID))
	}
	var replayed [3]int // by phase
	for id, hs := range byID {
		switch {
		case len(hs) == 1 && hs[0].status == 200:
		case len(hs) == 2 && hs[0].status == 401 && hs[1].status == 200:
			if hs[0].key == "" || hs[0].key == hs[1].key {
				t.Errorf("request %s: 401 for key %q (%v), replayed with %q", id, hs[0].key, hs[0].err, hs[1].key)
			}
			if !bytes.Equal(hs[0].rec.Body, hs[1].rec.Body) || hs[0].rec.RequestURI != hs[1].rec.RequestURI {
				t.Errorf("request %s: the replay is not the same request", id)
			}
			switch hs[0].key {
			case "k1":
				replayed[1]++
			case "k2":
				replayed[2]++
			default:
				replayed[0]++
			}
		default:
			var s []string
			for _, h := range hs {
				s = append(s, fmt.Sprintf("%d(%s)", h.status, h.key))
			}
			t.Errorf("request %s reached the upstream as %v; want 200, or 401 then one replay with 200", id, s)
		}
	}
	for i, h := range hits {
		if h.status == 200 && ((i >= revoke1 && h.key == "k1") || (i >= end2 && h.key == "k2")) {
			t.Errorf("hit %d: a revoked key was accepted (upstream bug)", i)
		}
	}
	t.Logf("%d client requests, all 200 as far as the clients saw; upstream 401s replayed: %d for k1 (phase 1), %d for k2 (phase 2), %d other; vault counts %v",
		sent.Load(), replayed[1], replayed[2], replayed[0], fv.allCounts())
}

// TestKeyVaultUnauthorizedStormOneRefetch: with a long refresh, the secret
// is rotated and the upstream accepts only the new key; 30 concurrent
// requests all get 401 with the old key, which costs the vault exactly one
// GET, and every client gets 200 through the replay. A second rotation
// inside the rate limit costs the vault nothing: the 401s pass through.
func TestKeyVaultUnauthorizedStormOneRefetch(t *testing.T) {
	keys := map[string][]byte{}
	b64 := map[string]string{}
	for _, n := range []string{"k1", "k2", "k3"} {
		keys[n], b64[n] = newKey(t)
	}
	up := newKVUpstream(t, keys, "k1")
	fv := newFakeVault(t)
	fv.setSecret("acs-key", kvConnStr(up.addr(), b64["k1"]))
	c := startCaddy(t, kvProxy(up.addr(), kvSource(fv.secretURL("acs-key", ""), uniqueClientID(), "1h")))
	t.Cleanup(kvClient.CloseIdleConnections)

	if got := kvSignedWith(t, c.url("/sms")); got != "k1" {
		t.Fatalf("signed with %q", got)
	}
	if n := fv.okGets(); n != 1 {
		t.Fatalf("vault GETs after start: %d, want 1; counts %v", n, fv.allCounts())
	}

	storm := func(n int) []kvResponse {
		start := make(chan struct{})
		out := make([]kvResponse, n)
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				out[i], errs[i] = kvSend("POST", c.url(fmt.Sprintf("/sms?id=%d", i)), []byte(`{}`))
			}()
		}
		close(start)
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("request %d: %v", i, err)
			}
		}
		return out
	}

	// Storm 1: rotated, the old key refused.
	before, beforeHits := fv.allCounts(), up.count()
	const n = 30
	fv.setSecret("acs-key", kvConnStr(up.addr(), b64["k2"]))
	up.accept("k2")
	up.hold401s(n) // all 30 signed with k1 before the first 401 comes back
	for i, r := range storm(n) {
		if r.status != 200 || r.header.Get("X-Signed-With") != "k2" {
			t.Errorf("request %d: %d (signed with %q) %s", i, r.status, r.header.Get("X-Signed-With"), r.body)
		}
	}
	after := fv.allCounts()
	if d := after[outcomeOK] - before[outcomeOK]; d != 1 {
		t.Errorf("the 401 storm cost the vault %d successful GETs, want exactly 1; counts before %v, after %v", d, before, after)
	}
	if d := after[outcomeChallenge] - before[outcomeChallenge]; d != 0 {
		t.Errorf("%d new challenges: the re-fetch did not reuse the fetcher's client", d)
	}
	var got401, got200 int
	for _, h := range up.snapshot()[beforeHits:] {
		switch {
		case h.status == 401 && h.key == "k1":
			got401++
		case h.status == 200 && h.key == "k2":
			got200++
		default:
			t.Errorf("unexpected upstream hit: %d signed with %q", h.status, h.key)
		}
	}
	if got401 != n || got200 != n {
		t.Errorf("upstream: %d 401s with k1 and %d 200s with k2, want %d and %d", got401, got200, n, n)
	}

	// Storm 2, within the re-fetch rate limit: no vault call, the 401 passes
	// back to the clients as the upstream sent it.
	before = fv.allCounts()
	fv.setSecret("acs-key", kvConnStr(up.addr(), b64["k3"]))
	up.accept("k3")
	for i, r := range storm(10) {
		if r.status != 401 || string(r.body) != kvDeniedBody {
			t.Errorf("rate-limited request %d: %d %s; want the upstream's 401", i, r.status, r.body)
		}
	}
	if after := fv.allCounts(); after[outcomeOK] != before[outcomeOK] {
		t.Errorf("re-fetch not rate-limited: vault counts before %v, after %v", before, after)
	}
}

// TestKeyVaultDownAfterStart: the vault drops connections, then answers
// 503, across many refresh periods; requests keep being signed with the last
// good key. Once the vault is back, a rotation is picked up by the
// background refresh alone.
func TestKeyVaultDownAfterStart(t *testing.T) {
	k1, k1b := newKey(t)
	k2, k2b := newKey(t)
	up := newKVUpstream(t, map[string][]byte{"k1": k1, "k2": k2}, "k1", "k2")
	fv := newFakeVault(t)
	fv.setSecret("acs-key", kvConnStr(up.addr(), k1b))
	c := startCaddy(t, kvProxy(up.addr(), kvSource(fv.secretURL("acs-key", ""), uniqueClientID(), "200ms")))
	kvEventually(t, 5*time.Second, "background refreshes", func() bool { return fv.okGets() >= 2 })

	for _, m := range []struct {
		mode    vaultMode
		outcome string
	}{{vaultDown, outcomeDropped}, {vaultUnavailable, outcomeUnavailable}} {
		fv.mode(m.mode)
		failed0 := fv.count(m.outcome)
		end := time.Now().Add(1200 * time.Millisecond) // six refresh periods
		for time.Now().Before(end) {
			if got := kvSignedWith(t, c.url("/sms")); got != "k1" {
				t.Fatalf("vault %v: signed with %q, want the last good key", m.mode, got)
			}
			time.Sleep(50 * time.Millisecond)
		}
		if d := fv.count(m.outcome) - failed0; d < 2 {
			t.Fatalf("vault %v: only %d failed refreshes in 1.2s with refresh 200ms; counts %v", m.mode, d, fv.allCounts())
		}
	}

	fv.mode(vaultNormal)
	v2 := fv.setSecret("acs-key", kvConnStr(up.addr(), k2b))
	kvEventually(t, 5*time.Second, "recovery picks up version "+v2, func() bool {
		return kvSignedWith(t, c.url("/sms")) == "k2"
	})
	for _, h := range up.snapshot() {
		if h.status != 200 {
			t.Errorf("upstream answered %d (%v)", h.status, h.err)
		}
	}
	logs := c.logs(t)
	if !strings.Contains(logs, "last good key keeps serving") {
		t.Error("the failed refreshes were not logged")
	}
	kvNoLeak(t, "logs", logs, map[string]string{"k1": k1b, "k2": k2b})
}

// TestKeyVaultLoadFailures: a config whose secret cannot be used is refused
// at load, in bounded time, with an error naming the secret (vault URL and
// name) and the reason, never the value.
func TestKeyVaultLoadFailures(t *testing.T) {
	fv := newFakeVault(t)
	key, keyB64 := newKey(t)
	notBase64 := "not-a-key-" + hex.EncodeToString(randomBytes(t, 6)) + "!!"
	badConn := "endpoint=https://contoso.communication.azure.com/;accesskey=" + notBase64
	logFile := filepath.Join(t.TempDir(), "caddy.log")
	secrets := kvKeyForms("key", key)
	secrets["non-base64 value"] = notBase64

	for _, tc := range []struct {
		name    string
		setup   func(t *testing.T) (secretName, version string) // "" name: the URL is given by url
		url     string
		want    []string
		maxTime time.Duration
	}{
		{name: "404 secret", setup: func(t *testing.T) (string, string) { return "absent", "" },
			want: []string{"does not exist", "404"}, maxTime: 5 * time.Second},
		{name: "404 version", setup: func(t *testing.T) (string, string) {
			fv.setSecret("present", keyB64)
			return "present", strings.Repeat("0", 32)
		}, want: []string{"does not exist"}, maxTime: 5 * time.Second},
		{name: "403 forbidden", setup: func(t *testing.T) (string, string) {
			fv.setSecret("forbidden", keyB64)
			fv.mode(vaultForbidden)
			t.Cleanup(func() { fv.mode(vaultNormal) })
			return "forbidden", ""
		}, want: []string{"Key Vault Secrets User", "403"}, maxTime: 5 * time.Second},
		{name: "vault down", setup: func(t *testing.T) (string, string) {
			fv.setSecret("down", keyB64)
			fv.mode(vaultDown)
			t.Cleanup(func() { fv.mode(vaultNormal) })
			return "down", ""
		}, maxTime: 40 * time.Second},
		{name: "vault unavailable", setup: func(t *testing.T) (string, string) {
			fv.setSecret("unavailable", keyB64)
			fv.mode(vaultUnavailable)
			t.Cleanup(func() { fv.mode(vaultNormal) })
			return "unavailable", ""
		}, want: []string{"503"}, maxTime: 40 * time.Second},
		{name: "disabled", setup: func(t *testing.T) (string, string) {
			fv.setSecret("disabled", keyB64, secretDisabled())
			return "disabled", ""
		}, want: []string{"disabled"}, maxTime: 5 * time.Second},
		{name: "expired", setup: func(t *testing.T) (string, string) {
			fv.setSecret("expired", keyB64, secretExpires(time.Now().Add(-time.Hour)))
			return "expired", ""
		}, want: []string{"expired"}, maxTime: 5 * time.Second},
		{name: "not yet valid", setup: func(t *testing.T) (string, string) {
			fv.setSecret("early", keyB64, secretNotBefore(time.Now().Add(time.Hour)))
			return "early", ""
		}, want: []string{"not valid before"}, maxTime: 5 * time.Second},
		{name: "empty", setup: func(t *testing.T) (string, string) {
			fv.setSecret("empty", "")
			return "empty", ""
		}, want: []string{"empty"}, maxTime: 5 * time.Second},
		{name: "blank", setup: func(t *testing.T) (string, string) {
			fv.setSecret("blank", " \n\t ")
			return "blank", ""
		}, want: []string{"empty"}, maxTime: 5 * time.Second},
		{name: "non-base64", setup: func(t *testing.T) (string, string) {
			fv.setSecret("garbage", notBase64)
			return "garbage", ""
		}, want: []string{"neither a connection string nor a base64 key"}, maxTime: 5 * time.Second},
		{name: "bad connection string", setup: func(t *testing.T) (string, string) {
			fv.setSecret("badconn", badConn)
			return "badconn", ""
		}, want: []string{"neither a connection string nor a base64 key"}, maxTime: 5 * time.Second},
		{name: "unknown managed identity", setup: func(t *testing.T) (string, string) {
			fv.setSecret("noidentity", keyB64)
			sharedIdentity.assignClientIDs(t, uniqueClientID()) // not ours
			return "noidentity", ""
		}, want: []string{"managed_identity", "No User Assigned"}, maxTime: 40 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			name, version := tc.setup(t)
			secretURL := fv.secretURL(name, version)
			cf := kvCaddyfile(logFile, kvSite(freePort(t), kvProxy("http://127.0.0.1:9", kvSource(secretURL, uniqueClientID(), "1h"))))
			start := time.Now()
			err := kvLoad(cf)
			took := time.Since(start)
			if err == nil {
				_ = caddy.Stop()
				t.Fatal("the config loaded")
			}
			msg := err.Error()
			t.Logf("after %v: %v", took.Round(time.Millisecond), msg)
			if took > tc.maxTime {
				t.Errorf("took %v, want < %v", took, tc.maxTime)
			}
			prefix := secretURL + " (credential managed_identity): "
			if i := strings.Index(msg, prefix); i < 0 || len(strings.TrimSpace(msg[i+len(prefix):])) < 3 {
				t.Errorf("error does not name the secret %s and a reason after it: %s", secretURL, msg)
			}
			for _, w := range append([]string{fv.vaultURL(), "/secrets/" + name, "key_vault"}, tc.want...) {
				if !strings.Contains(msg, w) {
					t.Errorf("error does not say %q: %s", w, msg)
				}
			}
			if version != "" && !strings.Contains(msg, version) {
				t.Errorf("error does not name version %s", version)
			}
			kvNoLeak(t, "the error", msg, secrets)
		})
	}
	// The errors are logged too: the logs must not hold the values either.
	if b, err := os.ReadFile(logFile); err == nil {
		kvNoLeak(t, "logs", string(b), secrets)
	}

	t.Run("malformed URL", func(t *testing.T) {
		for _, u := range []string{
			"http://127.0.0.1:1/secrets/acs",
			"https://127.0.0.1:1/keys/acs",
			"https://127.0.0.1:1/secrets/bad_name",
		} {
			err := kvLoad(kvCaddyfile(logFile, kvSite(freePort(t), kvProxy("http://127.0.0.1:9", kvSource(u, uniqueClientID(), "1h")))))
			if err == nil {
				_ = caddy.Stop()
				t.Fatalf("%s: the config loaded", u)
			}
			if !strings.Contains(err.Error(), "key_vault") || !strings.Contains(err.Error(), u) {
				t.Errorf("%s: error does not name the URL: %v", u, err)
			}
		}
	})
}

// TestKeyVaultThrottledAfterStart: the vault answers 429 Retry-After: 2;
// requests keep being signed with the last good key, and the refresher waits
// as told instead of retrying every 100ms. Once the throttling ends, a
// rotation is picked up.
func TestKeyVaultThrottledAfterStart(t *testing.T) {
	k1, k1b := newKey(t)
	k2, k2b := newKey(t)
	up := newKVUpstream(t, map[string][]byte{"k1": k1, "k2": k2}, "k1", "k2")
	fv := newFakeVault(t)
	fv.setSecret("acs-key", kvConnStr(up.addr(), k1b))
	c := startCaddy(t, kvProxy(up.addr(), kvSource(fv.secretURL("acs-key", ""), uniqueClientID(), "100ms")))
	kvEventually(t, 5*time.Second, "background refreshes", func() bool { return fv.okGets() >= 3 })

	fv.mode(vaultThrottled(2))
	total0, throttled0 := fv.totalGets(), fv.count(outcomeThrottled)
	end := time.Now().Add(3 * time.Second)
	for time.Now().Before(end) {
		if got := kvSignedWith(t, c.url("/sms")); got != "k1" {
			t.Fatalf("throttled: signed with %q, want the last good key", got)
		}
		time.Sleep(100 * time.Millisecond)
	}
	attempts, throttled := fv.totalGets()-total0, fv.count(outcomeThrottled)-throttled0
	t.Logf("in 3s of 429 Retry-After: 2 with refresh 100ms: %d vault requests (%d throttled)", attempts, throttled)
	if throttled < 1 {
		t.Fatalf("the vault was not asked while throttled; counts %v", fv.allCounts())
	}
	if attempts > 3 {
		t.Errorf("%d vault requests in 3s: Retry-After: 2 not honoured (at most 3 expected)", attempts)
	}

	fv.mode(vaultNormal)
	fv.setSecret("acs-key", kvConnStr(up.addr(), k2b))
	kvEventually(t, 5*time.Second, "recovery after throttling", func() bool {
		return kvSignedWith(t, c.url("/sms")) == "k2"
	})
}

// TestKeyVaultReloadKeepsOneFetcher: reloading a config that names the same
// secret and credential reuses the running fetcher (no new vault client, no
// new GET); unloading the last config that names it stops the fetcher: no
// more vault requests, no goroutine left behind.
func TestKeyVaultReloadKeepsOneFetcher(t *testing.T) {
	k1, k1b := newKey(t)
	up := newKVUpstream(t, map[string][]byte{"k1": k1}, "k1")
	fv := newFakeVault(t)
	fv.setSecret("acs-key", k1b)
	id := uniqueClientID()
	port := freePort(t)
	site := func(body string) string { return kvSite(port, body) }
	plain := site(kvProxy(up.addr(), "access_key "+k1b))
	c := startCaddySites(t, port, plain)
	if got := kvSignedWith(t, c.url("/sms")); got != "k1" {
		t.Fatalf("static key: %q", got)
	}

	settle := func() {
		kvClient.CloseIdleConnections()
		client.CloseIdleConnections()
		fv.srv.CloseClientConnections()
		sharedIdentity.srv.CloseClientConnections()
		up.srv.CloseClientConnections()
	}
	settle()
	time.Sleep(100 * time.Millisecond)
	baseline, fetchers0 := runtime.NumGoroutine(), kvFetcherGoroutines()

	withVault := func(refresh, extra string) string {
		return site(extra + "\n\t" + kvProxy(up.addr(), kvSource(fv.secretURL("acs-key", ""), id, refresh)))
	}
	// unloaded checks that no fetcher is left: vault requests stop and the
	// goroutines return to the baseline.
	unloaded := func(stage string) {
		t.Helper()
		if err := kvReload(c, plain); err != nil {
			t.Fatalf("%s: loading the config without key_vault: %v", stage, err)
		}
		if got := kvSignedWith(t, c.url("/sms")); got != "k1" {
			t.Fatalf("%s: static key: %q", stage, got)
		}
		time.Sleep(150 * time.Millisecond) // a fetch in flight at unload may still land
		n := fv.totalGets()
		time.Sleep(600 * time.Millisecond) // six refresh periods of the short refresh
		if d := fv.totalGets() - n; d != 0 {
			t.Errorf("%s: %d vault requests after the last config naming the secret was unloaded", stage, d)
		}
		if n := kvFetcherGoroutines(); n != fetchers0 {
			t.Errorf("%s: %d fetcher goroutines running, %d before", stage, n, fetchers0)
		}
		deadline := time.Now().Add(5 * time.Second)
		for {
			settle()
			g := runtime.NumGoroutine()
			if g <= baseline+2 {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("%s: %d goroutines, %d at the baseline\n%s", stage, g, baseline, kvGoroutineDump())
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
	}

	// Config A: the first fetch happens at load.
	if err := kvReload(c, withVault("1h", "")); err != nil {
		t.Fatalf("config A: %v", err)
	}
	if got := kvSignedWith(t, c.url("/sms")); got != "k1" {
		t.Fatalf("config A: %q", got)
	}
	countsA := fv.allCounts()
	if countsA[outcomeOK] != 1 || countsA[outcomeChallenge] != 1 {
		t.Fatalf("config A: vault counts %v, want one challenge and one GET", countsA)
	}
	if n := kvFetcherGoroutines(); n != fetchers0+1 {
		t.Errorf("config A: %d fetcher goroutines, want %d", n, fetchers0+1)
	}

	// Config B: same secret and credential, an unrelated setting changed.
	if err := kvReload(c, withVault("1h", "header X-Config B")); err != nil {
		t.Fatalf("config B: %v", err)
	}
	r, err := kvSend("POST", c.url("/sms"), []byte(`{}`))
	if err != nil || r.status != 200 || r.header.Get("X-Config") != "B" || r.header.Get("X-Signed-With") != "k1" {
		t.Fatalf("config B not in force: %v %d %v", err, r.status, r.header)
	}
	if countsB := fv.allCounts(); countsB[outcomeOK] != 1 || countsB[outcomeChallenge] != 1 {
		t.Errorf("config B: vault counts %v, want still one challenge and one GET (the fetcher reused)", countsB)
	}
	if n := kvFetcherGoroutines(); n != fetchers0+1 {
		t.Errorf("config B: %d fetcher goroutines, want %d", n, fetchers0+1)
	}
	unloaded("after config B")

	// Short refresh: the fetcher is busy until unloaded, then silent.
	if err := kvReload(c, withVault("100ms", "")); err != nil {
		t.Fatalf("config D: %v", err)
	}
	n0 := fv.okGets()
	kvEventually(t, 5*time.Second, "refreshes every 100ms", func() bool { return fv.okGets() >= n0+3 })
	if err := kvReload(c, withVault("100ms", "header X-Config E")); err != nil {
		t.Fatalf("config E: %v", err)
	}
	if n := kvFetcherGoroutines(); n != fetchers0+1 {
		t.Errorf("config E: %d fetcher goroutines, want %d", n, fetchers0+1)
	}
	unloaded("after config E")
}

// TestKeyVaultSharedFetcher: two transports and a verifier naming the same
// secret and credential in one config share one fetcher and one key: one
// construction GET, and a key re-fetched for one of them is the key of all.
func TestKeyVaultSharedFetcher(t *testing.T) {
	k1, k1b := newKey(t)
	k2, k2b := newKey(t)
	up := newKVUpstream(t, map[string][]byte{"k1": k1, "k2": k2}, "k1")
	fv := newFakeVault(t)
	fv.setSecret("acs-key", k1b)
	src := kvSource(fv.secretURL("acs-key", ""), uniqueClientID(), "1h")
	port, verifyPort := freePort(t), freePort(t)
	c := startCaddySites(t, port, kvSite(port, fmt.Sprintf(`handle /a/* {
		%s
	}
	handle /b/* {
		%s
	}`, kvProxy(up.addr(), src), kvProxy(fmt.Sprintf("127.0.0.1:%d", verifyPort), src)))+
		kvSite(verifyPort, fmt.Sprintf(`acs_hmac_verify {
		%s
	}
	respond `+"`"+`{"verified":true}`+"`"+` 202`, src)))

	if got := fv.allCounts(); got[outcomeOK] != 1 || got[outcomeChallenge] != 1 {
		t.Fatalf("three users of one secret: vault counts %v, want one challenge and one GET", got)
	}
	if got := kvSignedWith(t, c.url("/a/sms")); got != "k1" {
		t.Fatalf("/a: %q", got)
	}
	status, _, body := do(t, "POST", c.url("/b/sms"), []byte(`{}`), nil)
	if status != 202 {
		t.Fatalf("/b through the verifier: %d %s", status, body)
	}

	// Rotation seen through /a's 401 replay is in force for the verifier too.
	fv.setSecret("acs-key", k2b)
	up.accept("k2")
	if got := kvSignedWith(t, c.url("/a/sms")); got != "k2" {
		t.Fatalf("/a after rotation: %q", got)
	}
	status, _, body = do(t, "POST", c.url("/b/sms"), []byte(`{}`), nil)
	if status != 202 {
		t.Fatalf("/b after rotation: %d %s (the verifier does not share the fetcher's key)", status, body)
	}
	if got := fv.okGets(); got != 2 {
		t.Errorf("vault GETs %d, want 2 (construction and one re-fetch); counts %v", got, fv.allCounts())
	}
}

// TestKeyVaultFailedReloadKeepsRunningConfig: a reload whose secret does not
// exist fails and leaves the running config serving; the failed config's hold
// on the shared fetcher is released (unloading the running config stops it).
func TestKeyVaultFailedReloadKeepsRunningConfig(t *testing.T) {
	k1, k1b := newKey(t)
	up := newKVUpstream(t, map[string][]byte{"k1": k1}, "k1")
	fv := newFakeVault(t)
	fv.setSecret("acs-key", kvConnStr(up.addr(), k1b))
	src := kvSource(fv.secretURL("acs-key", ""), uniqueClientID(), "100ms")
	port := freePort(t)
	c := startCaddySites(t, port, kvSite(port, kvProxy(up.addr(), src)))
	if got := kvSignedWith(t, c.url("/sms")); got != "k1" {
		t.Fatalf("signed with %q", got)
	}
	fetchers0 := kvFetcherGoroutines()

	err := kvReload(c, kvSite(port, fmt.Sprintf(`header X-Config broken
	handle /a/* {
		%s
	}
	handle /b/* {
		%s
	}`, kvProxy(up.addr(), src), kvProxy(up.addr(), kvSource(fv.secretURL("missing", ""), uniqueClientID(), "100ms")))))
	if err == nil {
		t.Fatal("a config naming a missing secret loaded")
	}
	if !strings.Contains(err.Error(), "does not exist") || !strings.Contains(err.Error(), fv.secretURL("missing", "")) {
		t.Errorf("error: %v", err)
	}

	for i := 0; i < 5; i++ {
		r, err := kvSend("POST", c.url("/sms"), []byte(`{}`))
		if err != nil || r.status != 200 || r.header.Get("X-Signed-With") != "k1" || r.header.Get("X-Config") != "" {
			t.Fatalf("running config after the failed reload: %v %d %v %s", err, r.status, r.header, r.body)
		}
	}
	if n := kvFetcherGoroutines(); n != fetchers0 {
		t.Errorf("%d fetcher goroutines after the failed reload, %d before", n, fetchers0)
	}

	if err := kvReload(c, kvSite(port, kvProxy(up.addr(), "access_key "+k1b))); err != nil {
		t.Fatal(err)
	}
	time.Sleep(150 * time.Millisecond)
	n := fv.totalGets()
	time.Sleep(600 * time.Millisecond)
	if d := fv.totalGets() - n; d != 0 {
		t.Errorf("%d vault requests after unloading: the failed reload left a hold on the fetcher", d)
	}
	if n := kvFetcherGoroutines(); n != fetchers0-1 {
		t.Errorf("%d fetcher goroutines after unloading, want %d", n, fetchers0-1)
	}
}

// TestKeyVaultClientSecretStaysPlaceholder: a client secret given as a
// placeholder stays a placeholder in the adapted JSON.
func TestKeyVaultClientSecretStaysPlaceholder(t *testing.T) {
	secret := "cs~" + hex.EncodeToString(randomBytes(t, 16))
	t.Setenv("KVTEST_TENANT", fakeTenantID)
	t.Setenv("KVTEST_CLIENT", "11111111-2222-3333-4444-555555555555")
	t.Setenv("KVTEST_SECRET", secret)
	cfg, err := adapt(kvCaddyfile(filepath.Join(t.TempDir(), "caddy.log"), kvSite(freePort(t), `reverse_proxy https://contoso.communication.azure.com {
		transport acs_hmac {
			key_vault https://contoso-kv.vault.azure.net/secrets/acs-key {
				credential client_secret {env.KVTEST_TENANT} {env.KVTEST_CLIENT} {env.KVTEST_SECRET}
			}
		}
	}`)))
	if err != nil {
		t.Fatal(err)
	}
	js := string(cfg)
	if !strings.Contains(js, `"client_secret":"{env.KVTEST_SECRET}"`) {
		t.Errorf("the adapted JSON does not hold the placeholder:\n%s", js)
	}
	for _, s := range []string{secret, fakeTenantID, "11111111-2222-3333-4444-555555555555"} {
		if strings.Contains(js, s) {
			t.Errorf("the adapted JSON holds the expanded value %q:\n%s", s, js)
		}
	}
	var v any
	if err := json.Unmarshal(cfg, &v); err != nil {
		t.Fatal(err)
	}
}

// TestKeyVaultMetrics: fetches, key age, replays and signed requests are
// exported through Caddy's metrics, labelled by vault host and secret name,
// and the metrics hold no key material.
func TestKeyVaultMetrics(t *testing.T) {
	k1, k1b := newKey(t)
	k2, k2b := newKey(t)
	up := newKVUpstream(t, map[string][]byte{"k1": k1, "k2": k2}, "k1")
	fv := newFakeVault(t)
	cs1, cs2 := kvConnStr(up.addr(), k1b), kvConnStr(up.addr(), k2b)
	fv.setSecret("acs-metrics", cs1)
	c := startCaddy(t, fmt.Sprintf(`handle /metrics {
		metrics
	}
	handle {
		%s
	}`, kvProxy(up.addr(), kvSource(fv.secretURL("acs-metrics", ""), uniqueClientID(), "1h"))))

	for i := 0; i < 3; i++ {
		kvSignedWith(t, c.url("/sms"))
	}
	fv.setSecret("acs-metrics", cs2)
	up.accept("k2")
	if got := kvSignedWith(t, c.url("/sms")); got != "k2" {
		t.Fatalf("after rotation: %q", got)
	}

	status, _, body := do(t, "GET", c.url("/metrics"), nil, nil)
	if status != 200 {
		t.Fatalf("/metrics: %d %s", status, body)
	}
	text := string(body)
	label := strings.TrimPrefix(fv.vaultURL(), "https://") + "/acs-metrics"
	for _, re := range []string{
		`(?m)^caddy_acs_hmac_key_fetches_total\{outcome="ok",secret="` + regexp.QuoteMeta(label) + `"\} 2$`,
		`(?m)^caddy_acs_hmac_key_age_seconds\{secret="` + regexp.QuoteMeta(label) + `"\} [0-9.e+-]+$`,
		`(?m)^caddy_acs_hmac_unauthorized_replays_total\{outcome="replayed"\} [1-9][0-9]*$`,
		`(?m)^caddy_acs_hmac_requests_signed_total [1-9][0-9]*$`,
	} {
		if !regexp.MustCompile(re).MatchString(text) {
			t.Errorf("metrics do not match %s", re)
		}
	}
	if t.Failed() {
		var ours []string
		for _, l := range strings.Split(text, "\n") {
			if strings.Contains(l, "acs_hmac") {
				ours = append(ours, l)
			}
		}
		t.Logf("acs_hmac metrics:\n%s", strings.Join(ours, "\n"))
	}
	secrets := kvKeyForms("k1", k1)
	for k, v := range kvKeyForms("k2", k2) {
		secrets[k] = v
	}
	secrets["connection string 1"], secrets["connection string 2"] = cs1, cs2
	kvNoLeak(t, "the metrics", text, secrets)
}

// TestKeyVaultLogs: the logs say which secret version is in use and when it
// changed, and never hold the key or the connection string.
func TestKeyVaultLogs(t *testing.T) {
	k1, k1b := newKey(t)
	k2, k2b := newKey(t)
	up := newKVUpstream(t, map[string][]byte{"k1": k1, "k2": k2}, "k1", "k2")
	fv := newFakeVault(t)
	cs1, cs2 := kvConnStr(up.addr(), k1b), kvConnStr(up.addr(), k2b)
	v1 := fv.setSecret("acs-logs", cs1)
	c := startCaddy(t, kvProxy(up.addr(), kvSource(fv.secretURL("acs-logs", ""), uniqueClientID(), "200ms")))
	kvSignedWith(t, c.url("/sms"))
	v2 := fv.setSecret("acs-logs", cs2)
	kvEventually(t, 5*time.Second, "rotation", func() bool { return kvSignedWith(t, c.url("/sms")) == "k2" })

	logs := c.logs(t)
	var loaded, changed bool
	for _, l := range strings.Split(logs, "\n") {
		if !strings.Contains(l, "acs-logs") {
			continue
		}
		if strings.Contains(l, v1) && !strings.Contains(l, v2) && strings.Contains(l, "loaded") {
			loaded = true
		}
		if strings.Contains(l, "changed") && strings.Contains(l, `"version":"`+v2+`"`) && strings.Contains(l, v1) {
			changed = true
		}
	}
	if !loaded {
		t.Errorf("no log line says version %s was loaded", v1)
	}
	if !changed {
		t.Errorf("no log line says the secret changed from %s to %s", v1, v2)
	}
	if !strings.Contains(logs, `"signed request"`) {
		t.Error("debug logging did not run")
	}
	secrets := kvKeyForms("k1", k1)
	for k, v := range kvKeyForms("k2", k2) {
		secrets[k] = v
	}
	secrets["connection string 1"], secrets["connection string 2"] = cs1, cs2
	secrets["accesskey="] = "accesskey="
	kvNoLeak(t, "the logs", logs, secrets)
	if t.Failed() {
		t.Logf("logs:\n%s", logs)
	}
}

// TestKeyVaultExpiredKeyFailsClosed: the only version expires and the vault
// keeps serving it; the proxy then refuses requests with 503, Retry-After and
// a JSON KeyUnavailable, and sends nothing upstream. A new version restores
// service.
func TestKeyVaultExpiredKeyFailsClosed(t *testing.T) {
	k1, k1b := newKey(t)
	k2, k2b := newKey(t)
	up := newKVUpstream(t, map[string][]byte{"k1": k1, "k2": k2}, "k1", "k2")
	fv := newFakeVault(t)
	exp := time.Now().Add(3 * time.Second).Truncate(time.Second) // 2-3s from now
	fv.setSecret("acs-key", kvConnStr(up.addr(), k1b), secretExpires(exp))
	c := startCaddy(t, kvProxy(up.addr(), kvSource(fv.secretURL("acs-key", ""), uniqueClientID(), "200ms")))
	if got := kvSignedWith(t, c.url("/sms")); got != "k1" {
		t.Fatalf("before expiry: %q", got)
	}

	var last kvResponse
	kvEventually(t, 6*time.Second, "the proxy refuses after expiry", func() bool {
		r, err := kvSend("POST", c.url("/sms"), []byte(`{}`))
		if err != nil {
			t.Fatal(err)
		}
		if r.status == 200 && time.Now().After(exp.Add(2*time.Second)) {
			t.Fatalf("200 at %v, %v after the key expired", time.Now(), time.Since(exp))
		}
		last = r
		return r.status != 200
	})
	if time.Now().Before(exp) {
		t.Errorf("refused before the key expired: %d %s", last.status, last.body)
	}
	hits := up.count()
	for i := 0; i < 3; i++ {
		r, err := kvSend("POST", c.url("/sms"), []byte(`{}`))
		if err != nil {
			t.Fatal(err)
		}
		last = r
	}
	if last.status != http.StatusServiceUnavailable {
		t.Fatalf("after expiry: %d %s, want 503", last.status, last.body)
	}
	if ra := last.header.Get("Retry-After"); ra == "" {
		t.Error("503 without Retry-After")
	} else if n, err := strconv.Atoi(ra); err != nil || n <= 0 {
		t.Errorf("Retry-After %q", ra)
	}
	if code, _ := acsError(t, last.body); code != "KeyUnavailable" {
		t.Errorf("code %q, want KeyUnavailable", code)
	}
	if up.count() != hits {
		t.Error("a request reached the upstream without a valid key")
	}
	for _, h := range up.snapshot() {
		if h.status != 200 {
			t.Errorf("upstream got a request it refused: %v", h.err)
		}
	}

	// A fresh version restores service.
	fv.setSecret("acs-key", kvConnStr(up.addr(), k2b))
	kvEventually(t, 5*time.Second, "service restored", func() bool {
		r, err := kvSend("POST", c.url("/sms"), []byte(`{}`))
		return err == nil && r.status == 200 && r.header.Get("X-Signed-With") == "k2"
	})
}

// TestKeyVaultMetricsSameSecretTwoFetchers: one config reads the same secret
// through two fetchers (the latest version and a pinned one, and the latest
// again with another refresh interval, as during a migration). Caddy's
// metrics endpoint must keep working and report the key age of that secret.
func TestKeyVaultMetricsSameSecretTwoFetchers(t *testing.T) {
	k1, k1b := newKey(t)
	k2, k2b := newKey(t)
	fv := newFakeVault(t)
	v1 := fv.setSecret("acs-key", k1b)
	fv.setSecret("acs-key", k2b)
	up := newKVUpstream(t, map[string][]byte{"k1": k1, "k2": k2}, "k1", "k2")
	id := uniqueClientID()
	c := startCaddy(t, fmt.Sprintf(`handle /metrics {
		metrics
	}
	handle /latest/* {
		%s
	}
	handle /pinned/* {
		%s
	}
	handle /other/* {
		%s
	}`, kvProxy(up.addr(), kvSource(fv.secretURL("acs-key", ""), id, "1h")),
		kvProxy(up.addr(), kvSource(fv.secretURL("acs-key", v1), id, "1h")),
		kvProxy(up.addr(), kvSource(fv.secretURL("acs-key", ""), id, "30m"))))
	if got := kvSignedWith(t, c.url("/latest/sms")); got != "k2" {
		t.Fatalf("latest: %q", got)
	}
	if got := kvSignedWith(t, c.url("/pinned/sms")); got != "k1" {
		t.Fatalf("pinned: %q", got)
	}

	status, _, body := do(t, "GET", c.url("/metrics"), nil, nil)
	if status != 200 {
		t.Fatalf("/metrics answered %d with two fetchers of one secret:\n%s", status, body)
	}
	label := strings.TrimPrefix(fv.vaultURL(), "https://") + "/acs-key"
	if !strings.Contains(string(body), `caddy_acs_hmac_key_age_seconds{secret="`+label) {
		t.Errorf("no key age for %s", label)
	}
}

// TestKeyVaultPlaceholdersExpandAtProvision: the secret URL and the managed
// identity's client ID may be placeholders; they stay placeholders in the
// JSON and are expanded when the config is provisioned.
func TestKeyVaultPlaceholdersExpandAtProvision(t *testing.T) {
	k1, k1b := newKey(t)
	fv := newFakeVault(t)
	fv.setSecret("acs-key", k1b)
	up := newKVUpstream(t, map[string][]byte{"k1": k1}, "k1")
	id := uniqueClientID()
	t.Setenv("KVTEST_SECRET_URL", fv.secretURL("acs-key", ""))
	t.Setenv("KVTEST_MI_CLIENT_ID", id)
	body := kvProxy(up.addr(), kvSource("{env.KVTEST_SECRET_URL}", "{env.KVTEST_MI_CLIENT_ID}", "1h"))
	cfg, err := adapt(kvCaddyfile(filepath.Join(t.TempDir(), "caddy.log"), kvSite(freePort(t), body)))
	if err != nil {
		t.Fatal(err)
	}
	if js := string(cfg); !strings.Contains(js, "{env.KVTEST_SECRET_URL}") || !strings.Contains(js, "{env.KVTEST_MI_CLIENT_ID}") ||
		strings.Contains(js, id) || strings.Contains(js, fv.vaultURL()) {
		t.Errorf("the adapted JSON does not hold the placeholders:\n%s", js)
	}
	c := startCaddy(t, body)
	if got := kvSignedWith(t, c.url("/sms")); got != "k1" {
		t.Fatalf("signed with %q", got)
	}
	if calls := sharedIdentity.callsFor(id); len(calls) != 1 {
		t.Errorf("token requests for the expanded client ID: %d", len(calls))
	}
	for _, r := range fv.requests() {
		if r.Outcome == outcomeOK && r.ClientID != id {
			t.Errorf("vault request with the token of %q, want %q", r.ClientID, id)
		}
	}
}

// TestKeyVaultSlowVault: a vault that hangs after start neither slows
// requests (they keep the last good key) nor holds up unloading the config:
// the fetcher stops at once, its fetch abandoned.
func TestKeyVaultSlowVault(t *testing.T) {
	k1, k1b := newKey(t)
	up := newKVUpstream(t, map[string][]byte{"k1": k1}, "k1")
	fv := newFakeVault(t)
	fv.setSecret("acs-key", kvConnStr(up.addr(), k1b))
	port := freePort(t)
	c := startCaddySites(t, port, kvSite(port, kvProxy(up.addr(), kvSource(fv.secretURL("acs-key", ""), uniqueClientID(), "100ms"))))
	kvEventually(t, 5*time.Second, "background refreshes", func() bool { return fv.okGets() >= 2 })
	fetchers0 := kvFetcherGoroutines()

	fv.mode(vaultSlow(20 * time.Second))
	end := time.Now().Add(600 * time.Millisecond) // a refresh is surely hanging by then
	for time.Now().Before(end) {
		start := time.Now()
		if got := kvSignedWith(t, c.url("/sms")); got != "k1" {
			t.Fatalf("slow vault: signed with %q", got)
		}
		if d := time.Since(start); d > time.Second {
			t.Fatalf("a request took %v while the vault was slow", d)
		}
		time.Sleep(50 * time.Millisecond)
	}

	start := time.Now()
	if err := kvReload(c, kvSite(port, kvProxy(up.addr(), "access_key "+k1b))); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("unloading took %v with a fetch hanging on the vault", d)
	}
	kvEventually(t, 3*time.Second, "the fetcher stops", func() bool { return kvFetcherGoroutines() == fetchers0-1 })
}
