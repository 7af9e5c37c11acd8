// Package e2e runs the plugin inside a real Caddy instance, with real HTTP on
// loopback: client -> Caddy (acs_hmac transport) -> upstream. Upstreams check
// signatures with the independent verifier in this package, which shares no
// code with package signer.
package e2e

import (
	"bufio"
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/acsproxy/caddy-acs-hmac"
)

// independentVerify checks one received request against ACS's published
// rules, written out here from the signing document with crypto/hmac and
// crypto/sha256 directly. It returns nil for a request ACS would accept.
func independentVerify(key []byte, r *recorded, now time.Time) error {
	sum := sha256.Sum256(r.Body)
	bodyHash := base64.StdEncoding.EncodeToString(sum[:])
	if got := r.Header.Values("X-Ms-Content-Sha256"); len(got) != 1 || got[0] != bodyHash {
		return fmt.Errorf("x-ms-content-sha256 %q, body hashes to %q", got, bodyHash)
	}
	dates := r.Header.Values("X-Ms-Date")
	if len(dates) != 1 {
		return fmt.Errorf("want one x-ms-date, got %q", dates)
	}
	t, err := time.Parse(http.TimeFormat, dates[0])
	if err != nil {
		return fmt.Errorf("x-ms-date %q: %v", dates[0], err)
	}
	if d := now.Sub(t); d > 15*time.Minute || d < -15*time.Minute {
		return fmt.Errorf("x-ms-date %q is %v from now", dates[0], d)
	}
	auths := r.Header.Values("Authorization")
	if len(auths) != 1 {
		return fmt.Errorf("want one Authorization, got %d", len(auths))
	}
	const prefix = "HMAC-SHA256 SignedHeaders=x-ms-date;host;x-ms-content-sha256&Signature="
	if !strings.HasPrefix(auths[0], prefix) {
		return fmt.Errorf("authorization %q has the wrong form", auths[0])
	}
	toSign := strings.ToUpper(r.Method) + "\n" + r.RequestURI + "\n" + dates[0] + ";" + r.Host + ";" + bodyHash
	m := hmac.New(sha256.New, key)
	m.Write([]byte(toSign))
	want := base64.StdEncoding.EncodeToString(m.Sum(nil))
	if got := strings.TrimPrefix(auths[0], prefix); got != want {
		return fmt.Errorf("signature %q, want %q for string to sign %q", got, want, toSign)
	}
	if r.ContentLength != int64(len(r.Body)) && !(r.ContentLength == -1 && len(r.Body) == 0) {
		return fmt.Errorf("content-length %d, body %d bytes", r.ContentLength, len(r.Body))
	}
	return nil
}

// recorded is one request as an upstream received it, raw.
type recorded struct {
	Method        string
	RequestURI    string // the request-target as sent on the wire
	Host          string
	Header        http.Header
	Body          []byte
	ContentLength int64
	Proto         string
}

// record reads r in full and keeps it as it was received.
func record(r *http.Request) (*recorded, error) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return nil, err
	}
	return &recorded{Method: r.Method, RequestURI: r.RequestURI, Host: r.Host, Header: r.Header.Clone(),
		Body: body, ContentLength: r.ContentLength, Proto: r.Proto}, nil
}

// upstream is a loopback HTTP server that records every request and answers
// 200 with {"ok":true}, or whatever handler is set.
type upstream struct {
	*httptest.Server
	mu   sync.Mutex
	reqs []*recorded
}

func newUpstream(t *testing.T, tlsOn bool) *upstream {
	t.Helper()
	u := &upstream{}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec, err := record(r)
		if err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		u.mu.Lock()
		u.reqs = append(u.reqs, rec)
		u.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"ok":true}`))
	})
	if tlsOn {
		u.Server = httptest.NewUnstartedServer(h)
		u.EnableHTTP2 = true
		u.StartTLS()
	} else {
		u.Server = httptest.NewServer(h)
	}
	t.Cleanup(u.Close)
	return u
}

func (u *upstream) requests() []*recorded {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]*recorded(nil), u.reqs...)
}

// addr is the upstream's host:port.
func (u *upstream) addr() string { return u.Listener.Addr().String() }

// trustFile writes the TLS upstream's certificate as PEM for tls_trust_pool.
func (u *upstream) trustFile(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "upstream.pem")
	var b bytes.Buffer
	fmt.Fprintf(&b, "-----BEGIN CERTIFICATE-----\n")
	enc := base64.StdEncoding.EncodeToString(u.Certificate().Raw)
	for len(enc) > 64 {
		b.WriteString(enc[:64] + "\n")
		enc = enc[64:]
	}
	b.WriteString(enc + "\n-----END CERTIFICATE-----\n")
	if err := os.WriteFile(p, b.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// freePort returns a loopback port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// caddyInstance is a running Caddy with one site on a loopback port.
type caddyInstance struct {
	port    int
	logFile string
}

func (c *caddyInstance) url(pathAndQuery string) string {
	return fmt.Sprintf("http://127.0.0.1:%d%s", c.port, pathAndQuery)
}

// logs returns what Caddy logged so far.
func (c *caddyInstance) logs(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(c.logFile)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	return string(b)
}

// adapt turns a Caddyfile into JSON config.
func adapt(caddyfile string) ([]byte, error) {
	cfg, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(caddyfile), map[string]any{"filename": "Caddyfile"})
	return cfg, err
}

// startCaddy runs a Caddy whose single site, on a fresh loopback port, has
// siteBody as its contents; it logs at DEBUG to a file. Stopped at cleanup.
func startCaddy(t *testing.T, siteBody string) *caddyInstance {
	t.Helper()
	port := freePort(t)
	return startCaddySites(t, port, fmt.Sprintf("http://:%d {\n\tbind 127.0.0.1\n\t%s\n}\n", port, siteBody))
}

// startCaddySites runs a Caddy with the given sites (full site blocks); port
// is the one c.url addresses.
func startCaddySites(t *testing.T, port int, sites string) *caddyInstance {
	t.Helper()
	c := &caddyInstance{port: port, logFile: filepath.Join(t.TempDir(), "caddy.log")}
	cf := fmt.Sprintf(`{
	admin off
	auto_https off
	persist_config off
	log {
		output file %s
		level DEBUG
	}
}

%s
`, c.logFile, sites)
	cfg, err := adapt(cf)
	if err != nil {
		t.Fatalf("adapting Caddyfile: %v\n%s", err, cf)
	}
	if err := caddy.Load(cfg, true); err != nil {
		t.Fatalf("loading config: %v\n%s", err, cfg)
	}
	t.Cleanup(func() {
		if err := caddy.Stop(); err != nil {
			t.Errorf("stopping caddy: %v", err)
		}
	})
	return c
}

// do sends one request and returns the status and body.
func do(t *testing.T, method, url string, body []byte, header http.Header) (int, http.Header, []byte) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, b
}

var client = &http.Client{
	Timeout:   30 * time.Second,
	Transport: &http.Transport{DisableCompression: true},
	CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	},
}

// rawRequest writes a request line and headers exactly as given (so the
// request-target is not normalised by a client library) and reads the answer.
func rawRequest(t *testing.T, addr, raw string, body []byte) *http.Response {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.WriteString(conn, raw); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Write(body); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}
