package module

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
	"go.uber.org/zap"

	"github.com/acsproxy/caddy-acs-hmac/signer"
)

// utKeys is a KeySource stub.
type utKeys struct {
	cred  signer.Credential
	err   error
	calls atomic.Int32
}

func (k *utKeys) Credential() (signer.Credential, error) {
	k.calls.Add(1)
	return k.cred, k.err
}

// utRecorded is one request as the upstream received it.
type utRecorded struct {
	Method        string
	RequestURI    string
	Host          string
	Header        http.Header
	ContentLength int64
	TE            []string
	Body          []byte
}

// utUpstream is a test server that records what it receives.
type utUpstream struct {
	*httptest.Server
	mu    sync.Mutex
	reqs  []utRecorded
	dials atomic.Int32 // for redirecting transports (utDialTo)
	// status, when set, decides the answer to each request; default 202.
	status func(utRecorded) int
}

func (u *utUpstream) handler(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	rec := utRecorded{r.Method, r.RequestURI, r.Host, r.Header.Clone(), r.ContentLength, r.TransferEncoding, body}
	u.mu.Lock()
	u.reqs = append(u.reqs, rec)
	status := u.status
	u.mu.Unlock()
	code := http.StatusAccepted
	if status != nil {
		code = status(rec)
	}
	w.WriteHeader(code)
	_, _ = io.WriteString(w, `{"upstream":true}`)
}

func (u *utUpstream) received() []utRecorded {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]utRecorded(nil), u.reqs...)
}

func utNewUpstream(t *testing.T, tlsServer bool) *utUpstream {
	t.Helper()
	u := new(utUpstream)
	if tlsServer {
		u.Server = httptest.NewTLSServer(http.HandlerFunc(u.handler))
	} else {
		u.Server = httptest.NewServer(http.HandlerFunc(u.handler))
	}
	t.Cleanup(u.Close)
	return u
}

// utDialTo is an *http.Transport that connects to u whatever address a
// request names, so https://contoso.communication.azure.com:443 reaches the
// test server with its URL, Host and TLS server name unchanged.
func utDialTo(u *utUpstream) *http.Transport {
	addr := u.Listener.Addr().String()
	return &http.Transport{
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			u.dials.Add(1)
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, // test server's certificate
	}
}

// utNewTransport builds the transport as the brief prescribes, without
// reverse_proxy. rt, when nil, is Caddy's own *http.Transport from Provision.
func utNewTransport(t *testing.T, keys KeySource, max int64, rt *http.Transport) *Transport {
	t.Helper()
	tr := &Transport{HTTPTransport: new(reverseproxy.HTTPTransport), keys: keys, MaxBodySize: max, logger: zap.NewNop()}
	if rt != nil {
		tr.HTTPTransport.Transport = rt
	} else {
		ctx, _ := utCaddyCtx(t)
		if err := tr.HTTPTransport.Provision(ctx); err != nil {
			t.Fatalf("provisioning the embedded HTTP transport: %v", err)
		}
	}
	t.Cleanup(func() { _ = tr.HTTPTransport.Cleanup() })
	return tr
}

// utVarsCtx is a request context as Caddy's server builds it: with a vars map.
func utVarsCtx() (context.Context, map[string]any) {
	vars := map[string]any{}
	return context.WithValue(context.Background(), caddyhttp.VarsCtxKey, vars), vars
}

// utVerify checks a received request against the ACS rules with
// crypto/hmac directly (no package signer).
func utVerify(key []byte, r utRecorded) error {
	sum := sha256.Sum256(r.Body)
	bodyHash := base64.StdEncoding.EncodeToString(sum[:])
	if got := r.Header.Values("X-Ms-Content-Sha256"); len(got) != 1 || got[0] != bodyHash {
		return fmt.Errorf("x-ms-content-sha256 %q, body hashes to %q", got, bodyHash)
	}
	dates := r.Header.Values("X-Ms-Date")
	if len(dates) != 1 {
		return fmt.Errorf("want one x-ms-date, got %q", dates)
	}
	d, err := time.Parse(http.TimeFormat, dates[0])
	if err != nil {
		return fmt.Errorf("x-ms-date %q: %v", dates[0], err)
	}
	if skew := time.Since(d); skew > time.Minute || skew < -time.Minute {
		return fmt.Errorf("x-ms-date %q is %v from now", dates[0], skew)
	}
	if v := r.Header.Values("Date"); len(v) != 0 {
		return fmt.Errorf("a Date header was sent: %q", v)
	}
	auths := r.Header.Values("Authorization")
	if len(auths) != 1 {
		return fmt.Errorf("want one Authorization, got %q", auths)
	}
	const prefix = "HMAC-SHA256 SignedHeaders=x-ms-date;host;x-ms-content-sha256&Signature="
	if !strings.HasPrefix(auths[0], prefix) {
		return fmt.Errorf("authorization %q has the wrong form", auths[0])
	}
	toSign := strings.ToUpper(r.Method) + "\n" + r.RequestURI + "\n" + dates[0] + ";" + r.Host + ";" + bodyHash
	m := hmac.New(sha256.New, key)
	m.Write([]byte(toSign))
	if got, want := strings.TrimPrefix(auths[0], prefix), base64.StdEncoding.EncodeToString(m.Sum(nil)); got != want {
		return fmt.Errorf("signature %q, want %q for %q", got, want, toSign)
	}
	if r.ContentLength != int64(len(r.Body)) && !(r.ContentLength == -1 && len(r.Body) == 0) {
		return fmt.Errorf("content-length %d, body %d bytes", r.ContentLength, len(r.Body))
	}
	if len(r.TE) != 0 {
		return fmt.Errorf("transfer-encoding %q: ACS needs a Content-Length", r.TE)
	}
	return nil
}

// utDecodeError decodes an ACS-shaped error body strictly.
func utDecodeError(t *testing.T, body []byte) (code, message string) {
	t.Helper()
	var e map[string]map[string]string
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatalf("error body is not the ACS JSON shape: %v: %s", err, body)
	}
	inner, ok := e["error"]
	if len(e) != 1 || !ok || len(inner) != 2 {
		t.Fatalf("error body is not {\"error\":{\"code\":...,\"message\":...}}: %s", body)
	}
	return inner["code"], inner["message"]
}

func utReadResponse(t *testing.T, resp *http.Response) []byte {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func utBareKey(t *testing.T) (signer.Credential, []byte) {
	t.Helper()
	b64, raw := utNewKey(t)
	return signer.Credential{Key: utParsedKey(t, b64)}, raw
}

func TestTransportKeyUnavailable(t *testing.T) {
	up := utNewUpstream(t, false)
	keys := &utKeys{err: fmt.Errorf("key_vault contoso-kv/acs: %w", ErrNoKey)}
	tr := utNewTransport(t, keys, 1024, nil)

	ctx, _ := utVarsCtx()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, up.URL+"/emails:send?api-version=2023-03-31", strings.NewReader(`{"to":"x"}`))
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatalf("RoundTrip returned an error, want a synthesized response: %v", err)
	}
	body := utReadResponse(t, resp)
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("status %d, want 503", resp.StatusCode)
	}
	if ra := resp.Header.Get("Retry-After"); ra == "" {
		t.Error("no Retry-After")
	} else if n, err := strconv.Atoi(ra); err != nil || n <= 0 {
		t.Errorf("Retry-After %q is not a positive number of seconds", ra)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("Content-Type %q", ct)
	}
	if resp.ContentLength != int64(len(body)) {
		t.Errorf("ContentLength %d, body %d bytes", resp.ContentLength, len(body))
	}
	if code, msg := utDecodeError(t, body); code != "KeyUnavailable" || msg == "" {
		t.Errorf("error code %q message %q", code, msg)
	}
	if strings.Contains(string(body), "contoso-kv") {
		t.Errorf("the response exposes the key source's error: %s", body)
	}
	if resp.Request != req {
		t.Error("resp.Request is not the request")
	}
	if n := len(up.received()); n != 0 {
		t.Errorf("upstream was contacted %d times", n)
	}
}

func TestTransportBodyTooLarge(t *testing.T) {
	cred, _ := utBareKey(t)
	const max = 64
	for _, tc := range []struct {
		name string
		body io.Reader
		cl   int64
	}{
		{"declared length", utNoReadCloser{t}, max + 1},
		{"unknown length", strings.NewReader(strings.Repeat("x", 10*max)), -1},
		{"understated length", strings.NewReader(strings.Repeat("x", 10*max)), 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := utNewUpstream(t, false)
			tr := utNewTransport(t, &utKeys{cred: cred}, max, nil)
			ctx, vars := utVarsCtx()
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, up.URL+"/sms", tc.body)
			req.ContentLength = tc.cl
			resp, err := tr.RoundTrip(req)
			if err != nil {
				t.Fatalf("RoundTrip returned an error, want a synthesized response: %v", err)
			}
			body := utReadResponse(t, resp)
			if resp.StatusCode != http.StatusRequestEntityTooLarge {
				t.Errorf("status %d, want 413", resp.StatusCode)
			}
			if code, _ := utDecodeError(t, body); code != "RequestBodyTooLarge" {
				t.Errorf("code %q", code)
			}
			if ra := resp.Header.Get("Retry-After"); ra != "" {
				t.Errorf("Retry-After %q on a 413", ra)
			}
			if n := len(up.received()); n != 0 {
				t.Errorf("upstream was contacted %d times", n)
			}
			if _, ok := vars[bodyVar]; ok {
				t.Error("a refused body was kept in the request variables")
			}
		})
	}
}

// utNoReadCloser fails the test if read.
type utNoReadCloser struct{ t *testing.T }

func (r utNoReadCloser) Read([]byte) (int, error) {
	r.t.Error("body read although its declared length exceeds max_body_size")
	return 0, io.EOF
}
func (utNoReadCloser) Close() error { return nil }

func TestTransportDoesNotMutateRequest(t *testing.T) {
	up := utNewUpstream(t, false)
	cred, raw := utBareKey(t)
	tr := utNewTransport(t, &utKeys{cred: cred}, 1024, nil)

	const payload = `{"from":"+15550001111","to":["+15552223333"],"message":"hi"}`
	ctx, _ := utVarsCtx()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, up.URL+"/sms/a%2Fb?api-version=2021-03-07&x=a%20b", io.NopCloser(strings.NewReader(payload)))
	req.URL.Scheme = "" // as reverse_proxy may hand it over: the transport sets it
	req.Host = "client.example"
	req.ContentLength = -1
	req.TransferEncoding = []string{"chunked"}
	req.Header.Set("Authorization", "Bearer client-token")
	req.Header.Set("X-Ms-Date", "Mon, 01 Jan 2001 00:00:00 GMT")
	req.Header.Set("Date", "Mon, 01 Jan 2001 00:00:00 GMT")
	req.Header.Set("X-Ms-Content-Sha256", "bogus")
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Custom", "kept")
	req.Trailer = http.Header{"X-Trailer": nil}

	wantURL := *req.URL
	wantURLString := req.URL.String()
	wantHeader := req.Header.Clone()
	wantBody := req.Body
	wantTrailer := req.Trailer.Clone()

	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatalf("RoundTrip: %v", err)
	}
	utReadResponse(t, resp)
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("status %d", resp.StatusCode)
	}

	if *req.URL != wantURL || req.URL.String() != wantURLString {
		t.Errorf("URL changed: %s, was %s", req.URL, wantURLString)
	}
	if req.Host != "client.example" {
		t.Errorf("Host changed to %q", req.Host)
	}
	if fmt.Sprint(req.Header) != fmt.Sprint(wantHeader) {
		t.Errorf("Header changed:\n got %v\nwant %v", req.Header, wantHeader)
	}
	if req.Body != wantBody {
		t.Error("Body field replaced")
	}
	if req.GetBody != nil {
		t.Error("GetBody set")
	}
	if req.ContentLength != -1 {
		t.Errorf("ContentLength changed to %d", req.ContentLength)
	}
	if len(req.TransferEncoding) != 1 || req.TransferEncoding[0] != "chunked" {
		t.Errorf("TransferEncoding changed to %q", req.TransferEncoding)
	}
	if fmt.Sprint(req.Trailer) != fmt.Sprint(wantTrailer) {
		t.Errorf("Trailer changed to %v", req.Trailer)
	}
	if req.Method != http.MethodPost {
		t.Errorf("Method changed to %q", req.Method)
	}

	got := up.received()
	if len(got) != 1 {
		t.Fatalf("upstream received %d requests", len(got))
	}
	r := got[0]
	if err := utVerify(raw, r); err != nil {
		t.Errorf("signature: %v", err)
	}
	if string(r.Body) != payload {
		t.Errorf("upstream body %q", r.Body)
	}
	if r.Host != "client.example" {
		t.Errorf("upstream Host %q, want the Host as sent for a bare key", r.Host)
	}
	if r.RequestURI != "/sms/a%2Fb?api-version=2021-03-07&x=a%20b" {
		t.Errorf("upstream request-target %q", r.RequestURI)
	}
	if r.Header.Get("X-Custom") != "kept" || r.Header.Get("Content-Type") != "application/json" {
		t.Errorf("other headers were not forwarded: %v", r.Header)
	}
	if strings.Contains(r.Header.Get("Authorization"), "Bearer") {
		t.Error("the client's Authorization was forwarded")
	}
}

func TestTransportRetryReadsBodyOnce(t *testing.T) {
	up := utNewUpstream(t, false)
	cred, raw := utBareKey(t)
	tr := utNewTransport(t, &utKeys{cred: cred}, 1<<20, nil)

	payload := utPattern(50_000)
	for _, cl := range []int64{int64(len(payload)), -1} {
		t.Run("Content-Length "+strconv.FormatInt(cl, 10), func(t *testing.T) {
			ctx, vars := utVarsCtx()
			counted := &utCounting{r: bytes.NewReader(payload)}
			req, _ := http.NewRequestWithContext(ctx, http.MethodPut, up.URL+"/upload?api-version=1", io.NopCloser(counted))
			req.ContentLength = cl

			for attempt := 1; attempt <= 2; attempt++ {
				if attempt == 2 {
					if _, ok := vars[bodyVar]; !ok {
						t.Fatal("the buffered body is not kept in the request variables")
					}
				}
				callsBefore := counted.calls
				resp, err := tr.RoundTrip(req)
				if err != nil {
					t.Fatalf("attempt %d: %v", attempt, err)
				}
				utReadResponse(t, resp)
				if resp.StatusCode != http.StatusAccepted {
					t.Fatalf("attempt %d: status %d", attempt, resp.StatusCode)
				}
				if attempt == 2 && counted.calls != callsBefore {
					t.Errorf("attempt 2 read the client body again (%d more Read calls)", counted.calls-callsBefore)
				}
			}
			if counted.n != int64(len(payload)) {
				t.Errorf("read %d bytes of the client body, want %d once", counted.n, len(payload))
			}
			got := up.received()
			got = got[len(got)-2:]
			for i, r := range got {
				if !bytes.Equal(r.Body, payload) {
					t.Errorf("attempt %d: upstream got %d bytes, want the full %d", i+1, len(r.Body), len(payload))
				}
				if err := utVerify(raw, r); err != nil {
					t.Errorf("attempt %d: %v", i+1, err)
				}
			}
		})
	}
}

func TestTransportEndpointCredential(t *testing.T) {
	keyB64, raw := utNewKey(t)
	cred, err := signer.ParseConnectionString("endpoint=https://contoso.communication.azure.com/;accesskey=" + keyB64)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("Host is the endpoint's", func(t *testing.T) {
		for _, tc := range []struct{ url, clientHost string }{
			{"https://contoso.communication.azure.com:443/sms?api-version=2021-03-07", "localhost:8080"},
			{"https://contoso.communication.azure.com/sms?api-version=2021-03-07", ""},
			{"https://Contoso.Communication.Azure.com:443/sms?api-version=2021-03-07", "evil.example"},
		} {
			up := utNewUpstream(t, true)
			tr := utNewTransport(t, &utKeys{cred: cred}, 1024, utDialTo(up))
			ctx, _ := utVarsCtx()
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, tc.url, strings.NewReader(`{"m":1}`))
			req.Host = tc.clientHost
			resp, err := tr.RoundTrip(req)
			if err != nil {
				t.Fatalf("%s: RoundTrip: %v", tc.url, err)
			}
			utReadResponse(t, resp)
			got := up.received()
			if len(got) != 1 {
				t.Fatalf("%s: upstream received %d requests (status %d)", tc.url, len(got), resp.StatusCode)
			}
			if got[0].Host != "contoso.communication.azure.com" {
				t.Errorf("%s, client Host %q: sent Host %q, want the endpoint's", tc.url, tc.clientHost, got[0].Host)
			}
			if err := utVerify(raw, got[0]); err != nil {
				t.Errorf("%s: %v", tc.url, err)
			}
		}
	})

	t.Run("other upstreams are refused", func(t *testing.T) {
		for _, u := range []string{
			"https://evil.example:443/sms",
			"https://fabrikam.communication.azure.com/sms",
			"https://contoso.communication.azure.com:8443/sms", // port
			"http://contoso.communication.azure.com:443/sms",   // scheme
			"http://contoso.communication.azure.com/sms",
		} {
			up := utNewUpstream(t, true)
			tr := utNewTransport(t, &utKeys{cred: cred}, 1024, utDialTo(up))
			ctx, _ := utVarsCtx()
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, u, strings.NewReader(`{"m":1}`))
			resp, err := tr.RoundTrip(req)
			if err != nil {
				t.Fatalf("%s: RoundTrip returned an error, want a synthesized 502: %v", u, err)
			}
			body := utReadResponse(t, resp)
			if resp.StatusCode != http.StatusBadGateway {
				t.Errorf("%s: status %d, want 502", u, resp.StatusCode)
			}
			if code, _ := utDecodeError(t, body); code != "UpstreamNotEndpoint" {
				t.Errorf("%s: code %q", u, code)
			}
			if n := up.dials.Load(); n != 0 {
				t.Errorf("%s: upstream dialled %d times", u, n)
			}
			if n := len(up.received()); n != 0 {
				t.Errorf("%s: upstream received %d requests", u, n)
			}
		}
	})
}

func TestTransportBareKeyHost(t *testing.T) {
	cred, raw := utBareKey(t)
	for _, tc := range []struct {
		name       string
		url        string
		clientHost string
		wantHost   string
	}{
		{"https on :443, Host from the URL", "https://acs.example.com:443/p?api-version=1", "", "acs.example.com"},
		{"https on :443, Host with :443", "https://acs.example.com:443/p", "acs.example.com:443", "acs.example.com"},
		{"https on :443, Host upper case", "https://acs.example.com:443/p", "ACS.Example.com", "acs.example.com"},
		{"https, non-default port kept", "https://acs.example.com:8443/p", "", "acs.example.com:8443"},
		{"https, header_up Host override", "https://acs.example.com:443/p", "other.example:443", "other.example"},
		{"http on :80", "http://acs.example.com:80/p", "", "acs.example.com"},
		{"http, :443 is not http's default", "http://acs.example.com:443/p", "", "acs.example.com:443"},
		{"https, IPv6 literal on :443", "https://[::1]:443/p", "", "[::1]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := utNewUpstream(t, strings.HasPrefix(tc.url, "https"))
			tr := utNewTransport(t, &utKeys{cred: cred}, 1024, utDialTo(up))
			ctx, _ := utVarsCtx()
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, tc.url, nil)
			req.Host = tc.clientHost
			resp, err := tr.RoundTrip(req)
			if err != nil {
				t.Fatalf("RoundTrip: %v", err)
			}
			utReadResponse(t, resp)
			got := up.received()
			if len(got) != 1 {
				t.Fatalf("upstream received %d requests (status %d)", len(got), resp.StatusCode)
			}
			if got[0].Host != tc.wantHost {
				t.Errorf("sent Host %q, want %q", got[0].Host, tc.wantHost)
			}
			if err := utVerify(raw, got[0]); err != nil {
				t.Error(err)
			}
		})
	}
}

func TestTransportEmptyBody(t *testing.T) {
	up := utNewUpstream(t, false)
	cred, raw := utBareKey(t)
	tr := utNewTransport(t, &utKeys{cred: cred}, 1024, nil)
	for _, method := range []string{http.MethodGet, http.MethodPost, http.MethodDelete} {
		ctx, _ := utVarsCtx()
		req, _ := http.NewRequestWithContext(ctx, method, up.URL+"/identities?api-version=2023-10-01", http.NoBody)
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatalf("%s: %v", method, err)
		}
		utReadResponse(t, resp)
	}
	for _, r := range up.received() {
		if got := r.Header.Get("X-Ms-Content-Sha256"); got != signer.EmptyContentHash {
			t.Errorf("%s: content hash %q", r.Method, got)
		}
		if err := utVerify(raw, r); err != nil {
			t.Errorf("%s: %v", r.Method, err)
		}
	}
}

// utCloseTracker records whether the client body was closed.
type utCloseTracker struct {
	io.Reader
	closed atomic.Bool
}

func (c *utCloseTracker) Close() error { c.closed.Store(true); return nil }

// TestTransportClosesRequestBody checks the http.RoundTripper contract:
// "RoundTrip must always close the body, including on errors".
func TestTransportClosesRequestBody(t *testing.T) {
	cred, _ := utBareKey(t)
	for _, tc := range []struct {
		name string
		keys *utKeys
		size int
	}{
		{"sent", &utKeys{cred: cred}, 10},
		{"key unavailable", &utKeys{err: ErrNoKey}, 10},
		{"too large", &utKeys{cred: cred}, 100},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := utNewUpstream(t, false)
			tr := utNewTransport(t, tc.keys, 50, nil)
			ctx, _ := utVarsCtx()
			body := &utCloseTracker{Reader: strings.NewReader(strings.Repeat("b", tc.size))}
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, up.URL+"/", body)
			req.ContentLength = -1
			resp, err := tr.RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			utReadResponse(t, resp)
			deadline := time.Now().Add(2 * time.Second) // "may do so in a separate goroutine"
			for !body.closed.Load() && time.Now().Before(deadline) {
				time.Sleep(5 * time.Millisecond)
			}
			if !body.closed.Load() {
				t.Errorf("the request body was never closed (status %d)", resp.StatusCode)
			}
		})
	}
}

// utRefreshingKeys is a KeySource and Refresher stub: Refresh hands out next.
type utRefreshingKeys struct {
	utKeys
	next      signer.Credential
	changed   bool
	refreshes atomic.Int32
	used      atomic.Pointer[signer.Key]
}

func (k *utRefreshingKeys) Refresh(_ context.Context, used *signer.Key) (signer.Credential, bool) {
	k.refreshes.Add(1)
	k.used.Store(used)
	if k.changed {
		return k.next, true
	}
	return k.cred, false
}

func TestTransportReplayAfter401(t *testing.T) {
	oldCred, oldRaw := utBareKey(t)
	newCred, newRaw := utBareKey(t)
	const payload = `{"message":"replayed"}`

	for _, tc := range []struct {
		name          string
		keys          KeySource
		acceptNewKey  bool // upstream accepts the new key; else 401 to everything
		wantStatus    int
		wantRequests  int
		wantRefreshes int32
	}{
		{"rotated key: replayed once", &utRefreshingKeys{utKeys: utKeys{cred: oldCred}, next: newCred, changed: true}, true, http.StatusAccepted, 2, 1},
		{"key unchanged: 401 passed on", &utRefreshingKeys{utKeys: utKeys{cred: oldCred}}, true, http.StatusUnauthorized, 1, 1},
		{"no Refresher: 401 passed on", &utKeys{cred: oldCred}, true, http.StatusUnauthorized, 1, 0},
		{"replay refused too: one replay only", &utRefreshingKeys{utKeys: utKeys{cred: oldCred}, next: newCred, changed: true}, false, http.StatusUnauthorized, 2, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := utNewUpstream(t, false)
			up.status = func(r utRecorded) int {
				if tc.acceptNewKey && utVerify(newRaw, r) == nil {
					return http.StatusAccepted
				}
				return http.StatusUnauthorized
			}
			tr := utNewTransport(t, tc.keys, 1024, nil)
			ctx, _ := utVarsCtx()
			counted := &utCounting{r: strings.NewReader(payload)}
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, up.URL+"/sms?api-version=2021-03-07", io.NopCloser(counted))
			req.ContentLength = int64(len(payload))
			resp, err := tr.RoundTrip(req)
			if err != nil {
				t.Fatalf("RoundTrip: %v", err)
			}
			utReadResponse(t, resp)
			if resp.StatusCode != tc.wantStatus {
				t.Errorf("status %d, want %d", resp.StatusCode, tc.wantStatus)
			}
			got := up.received()
			if len(got) != tc.wantRequests {
				t.Fatalf("upstream received %d requests, want %d", len(got), tc.wantRequests)
			}
			if counted.n != int64(len(payload)) {
				t.Errorf("client body read %d bytes, want %d once", counted.n, len(payload))
			}
			if err := utVerify(oldRaw, got[0]); err != nil {
				t.Errorf("first attempt not signed with the key in force: %v", err)
			}
			if len(got) == 2 {
				if err := utVerify(newRaw, got[1]); err != nil {
					t.Errorf("replay not signed with the rotated key: %v", err)
				}
				if string(got[1].Body) != payload {
					t.Errorf("replay body %q", got[1].Body)
				}
			}
			if rk, ok := tc.keys.(*utRefreshingKeys); ok {
				if n := rk.refreshes.Load(); n != tc.wantRefreshes {
					t.Errorf("Refresh called %d times, want %d", n, tc.wantRefreshes)
				}
				if used := rk.used.Load(); used != nil && used != oldCred.Key {
					t.Error("Refresh was not told the key that was refused")
				}
			}
		})
	}
}
