package e2e

// A fake Azure Key Vault and a fake App Service managed-identity token
// endpoint, both speaking the wire protocols the real Azure SDK
// (azsecrets v1.5.1, azidentity v1.15.0) uses, so end-to-end tests can run the
// plugin's real Key Vault code path on loopback.
//
// TestMain (below) prepares the process for them:
//   - SSL_CERT_FILE names a PEM file holding the certificate every httptest TLS
//     server uses, so clients built on the system cert pool (azcore's default
//     transport) trust the fake vault;
//   - one fakeIdentity, sharedIdentity, is started and IDENTITY_ENDPOINT +
//     IDENTITY_HEADER point at it, which makes azidentity's
//     ManagedIdentityCredential (and DefaultAzureCredential) use the App
//     Service managed identity protocol against it;
//   - AZURE_* (except AZURE_SDK_GO_LOGGING) and the other managed-identity
//     variables (MSI_*, IMDS_ENDPOINT, IDENTITY_SERVER_THUMBPRINT) are unset so
//     nothing on the developer's machine redirects the credentials.
//
// Tokens: every fakeIdentity registers the tokens it issues in one
// process-wide registry and every fakeVault accepts any registered, unexpired
// token for https://vault.azure.net. This matters because MSAL keeps a
// process-wide managed-identity token cache (keyed by identity and resource):
// a second credential for the same identity is usually served from that cache
// without calling the token endpoint at all. Tests that must see a token
// request should ask for a user-assigned identity with a client ID of their
// own (uniqueClientID) or assert on fakeVault's per-request ClientID.

import (
	"bytes"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	// fakeTenantID is the tenant the fake vault's challenge names.
	fakeTenantID = "72f988bf-86f1-41af-91ab-2d7cd011db47"
	// vaultResource is the audience Key Vault tokens are issued for (the
	// challenge's resource; managed identity asks for it without /.default).
	vaultResource = "https://vault.azure.net"
	// vaultChallenge is the WWW-Authenticate header Key Vault sends.
	vaultChallenge = `Bearer authorization="https://login.microsoftonline.com/` + fakeTenantID + `", resource="` + vaultResource + `"`
	// appServiceAPIVersion is the App Service managed identity API version
	// azidentity v1.15.0 (through MSAL) sends.
	appServiceAPIVersion = "2019-08-01"
)

// sharedIdentity is the token endpoint IDENTITY_ENDPOINT points at; TestMain
// starts it.
var sharedIdentity *fakeIdentity

func TestMain(m *testing.M) {
	os.Exit(runVaultHarnessMain(m))
}

func runVaultHarnessMain(m *testing.M) int {
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(strings.ToUpper(k), "AZURE_") && !strings.EqualFold(k, "AZURE_SDK_GO_LOGGING") {
			os.Unsetenv(k)
		}
	}
	for _, k := range []string{"MSI_ENDPOINT", "MSI_SECRET", "IMDS_ENDPOINT", "IDENTITY_SERVER_THUMBPRINT", "DEFAULT_IDENTITY_CLIENT_ID"} {
		os.Unsetenv(k)
	}

	// All httptest TLS servers share one built-in certificate.
	probe := httptest.NewTLSServer(http.NotFoundHandler())
	cert := probe.Certificate()
	probe.Close()
	dir, err := os.MkdirTemp("", "e2e-vault-harness-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "vault harness:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	certFile := filepath.Join(dir, "httptest-ca.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}), 0o600); err != nil {
		fmt.Fprintln(os.Stderr, "vault harness:", err)
		return 1
	}
	os.Setenv("SSL_CERT_FILE", certFile)
	// Go loads the system pool once per process; if something loaded it before
	// this point, the file above is ignored and every vault test would fail
	// with an unknown-authority error. Say so plainly instead.
	if _, err := cert.Verify(x509.VerifyOptions{DNSName: "127.0.0.1"}); err != nil {
		fmt.Fprintf(os.Stderr, "vault harness: the system cert pool does not trust the httptest certificate after setting SSL_CERT_FILE (was it loaded earlier?): %v\n", err)
		return 1
	}

	sharedIdentity = startFakeIdentity()
	defer sharedIdentity.close()
	os.Setenv("IDENTITY_ENDPOINT", sharedIdentity.endpoint())
	os.Setenv("IDENTITY_HEADER", sharedIdentity.header)

	return m.Run()
}

// randomHex returns n random bytes as lower-case hex.
func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

// uniqueClientID returns a fresh GUID-shaped client ID, so a user-assigned
// managed identity credential built with it misses MSAL's process-wide token
// cache and really calls the token endpoint.
func uniqueClientID() string {
	h := randomHex(16)
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// ---------------------------------------------------------------------------
// Token registry shared by every fakeIdentity and fakeVault in the process.

type tokenGrant struct {
	ClientID string // "" for the system-assigned identity
	Resource string
	Expires  time.Time
}

var issuedTokens = struct {
	sync.Mutex
	m map[string]tokenGrant
}{m: map[string]tokenGrant{}}

func registerToken(tok string, g tokenGrant) {
	issuedTokens.Lock()
	defer issuedTokens.Unlock()
	issuedTokens.m[tok] = g
}

func lookupToken(tok string) (tokenGrant, bool) {
	issuedTokens.Lock()
	defer issuedTokens.Unlock()
	g, ok := issuedTokens.m[tok]
	return g, ok
}

// ---------------------------------------------------------------------------
// fakeIdentity: the App Service managed identity endpoint.

// identityCall is one request the token endpoint received.
type identityCall struct {
	Time       time.Time
	APIVersion string
	Resource   string
	ClientID   string // client_id query parameter (user-assigned by client ID)
	ObjectID   string // object_id
	ResourceID string // mi_res_id
	Header     string // X-IDENTITY-HEADER as received
	HeaderOK   bool
	Status     int
	Token      string // issued access token, when Status is 200
}

// fakeIdentity answers GET <endpoint>?api-version=2019-08-01&resource=...
// [&client_id=...] with an App Service token response, provided the request
// carries the right X-IDENTITY-HEADER.
type fakeIdentity struct {
	srv    *httptest.Server
	header string // the secret IDENTITY_HEADER value

	mu         sync.Mutex
	callLog    []identityCall
	lifetime   time.Duration
	failStatus int
	allowed    map[string]bool // nil: any client ID is assigned
}

// startFakeIdentity starts a token endpoint on plain-HTTP loopback; the caller
// closes it. Tests normally use sharedIdentity (see newFakeIdentity).
func startFakeIdentity() *fakeIdentity {
	fi := &fakeIdentity{header: randomHex(16), lifetime: time.Hour}
	fi.srv = httptest.NewServer(http.HandlerFunc(fi.serve))
	return fi
}

// newFakeIdentity starts a private token endpoint, closed at cleanup. It only
// takes effect for credentials built after useFakeIdentity(t, fi).
func newFakeIdentity(t testing.TB) *fakeIdentity {
	t.Helper()
	fi := startFakeIdentity()
	t.Cleanup(fi.close)
	return fi
}

// useFakeIdentity points IDENTITY_ENDPOINT/IDENTITY_HEADER at fi for the rest
// of the test (t.Setenv: not for parallel tests).
func useFakeIdentity(t *testing.T, fi *fakeIdentity) {
	t.Helper()
	t.Setenv("IDENTITY_ENDPOINT", fi.endpoint())
	t.Setenv("IDENTITY_HEADER", fi.header)
}

func (fi *fakeIdentity) close() { fi.srv.Close() }

// endpoint is the IDENTITY_ENDPOINT value: http://127.0.0.1:<port>/msi/token.
func (fi *fakeIdentity) endpoint() string { return fi.srv.URL + "/msi/token" }

// identityHeader is the IDENTITY_HEADER value the endpoint expects.
func (fi *fakeIdentity) identityHeader() string { return fi.header }

// calls returns every request received so far, oldest first.
func (fi *fakeIdentity) calls() []identityCall {
	fi.mu.Lock()
	defer fi.mu.Unlock()
	return append([]identityCall(nil), fi.callLog...)
}

// callsFor returns the requests that asked for a user-assigned identity by
// this client ID ("" selects the system-assigned requests).
func (fi *fakeIdentity) callsFor(clientID string) []identityCall {
	var out []identityCall
	for _, c := range fi.calls() {
		if c.ClientID == clientID && c.ObjectID == "" && c.ResourceID == "" {
			out = append(out, c)
		}
	}
	return out
}

// setTokenLifetime changes the lifetime of tokens issued from now on, until
// the test ends. Below 5 minutes MSAL never serves them from its cache and
// azcore refreshes them (at most every 30s per client).
func (fi *fakeIdentity) setTokenLifetime(t testing.TB, d time.Duration) {
	fi.mu.Lock()
	old := fi.lifetime
	fi.lifetime = d
	fi.mu.Unlock()
	t.Cleanup(func() { fi.mu.Lock(); fi.lifetime = old; fi.mu.Unlock() })
}

// fail makes every token request answer status (0 restores normal service)
// until the test ends.
func (fi *fakeIdentity) fail(t testing.TB, status int) {
	fi.mu.Lock()
	old := fi.failStatus
	fi.failStatus = status
	fi.mu.Unlock()
	t.Cleanup(func() { fi.mu.Lock(); fi.failStatus = old; fi.mu.Unlock() })
}

// assignClientIDs makes only these user-assigned client IDs known (others get
// App Service's 400) until the test ends. System-assigned stays available.
func (fi *fakeIdentity) assignClientIDs(t testing.TB, ids ...string) {
	fi.mu.Lock()
	old := fi.allowed
	fi.allowed = map[string]bool{}
	for _, id := range ids {
		fi.allowed[strings.ToLower(id)] = true
	}
	fi.mu.Unlock()
	t.Cleanup(func() { fi.mu.Lock(); fi.allowed = old; fi.mu.Unlock() })
}

func (fi *fakeIdentity) serve(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	c := identityCall{
		Time:       time.Now(),
		APIVersion: q.Get("api-version"),
		Resource:   q.Get("resource"),
		ClientID:   q.Get("client_id"),
		ObjectID:   q.Get("object_id"),
		ResourceID: q.Get("mi_res_id"),
		Header:     r.Header.Get("X-IDENTITY-HEADER"),
	}
	c.HeaderOK = c.Header == fi.header

	fi.mu.Lock()
	lifetime, failStatus, allowed := fi.lifetime, fi.failStatus, fi.allowed
	fi.mu.Unlock()

	status, body := fi.answer(r, c, lifetime, failStatus, allowed)
	c.Status = status
	if status == http.StatusOK {
		c.Token = body["access_token"].(string)
	}
	fi.mu.Lock()
	fi.callLog = append(fi.callLog, c)
	fi.mu.Unlock()

	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(body)
}

func (fi *fakeIdentity) answer(r *http.Request, c identityCall, lifetime time.Duration, failStatus int, allowed map[string]bool) (int, map[string]any) {
	errBody := func(status int, msg string) (int, map[string]any) {
		return status, map[string]any{"statusCode": status, "message": msg}
	}
	switch {
	case r.Method != http.MethodGet || r.URL.Path != "/msi/token":
		return errBody(http.StatusNotFound, "not found")
	case !c.HeaderOK:
		return errBody(http.StatusUnauthorized, "Unauthorized: X-IDENTITY-HEADER is missing or wrong")
	case failStatus != 0:
		return errBody(failStatus, "fake identity endpoint told to fail")
	case c.APIVersion != appServiceAPIVersion:
		return errBody(http.StatusBadRequest, "unsupported api-version "+strconv.Quote(c.APIVersion))
	case c.Resource == "":
		return errBody(http.StatusBadRequest, "resource is required")
	case c.ClientID != "" && allowed != nil && !allowed[strings.ToLower(c.ClientID)],
		c.ObjectID != "" && allowed != nil, c.ResourceID != "" && allowed != nil:
		return errBody(http.StatusBadRequest, "No User Assigned or Delegated Managed Identity found for specified ClientId/ResourceId/PrincipalId.")
	}
	tok := "fakemi." + randomHex(24)
	exp := time.Now().Add(lifetime).Truncate(time.Second)
	registerToken(tok, tokenGrant{ClientID: c.ClientID, Resource: c.Resource, Expires: exp})
	clientID := c.ClientID
	if clientID == "" {
		clientID = "00000000-0000-0000-0000-5a5e4a551600" // the system-assigned identity's app ID
	}
	return http.StatusOK, map[string]any{
		"access_token": tok,
		"expires_on":   strconv.FormatInt(exp.Unix(), 10),
		"resource":     c.Resource,
		"token_type":   "Bearer",
		"client_id":    clientID,
	}
}

// ---------------------------------------------------------------------------
// fakeVault: Key Vault's secrets data plane, GET only.

// vaultMode selects how the fake vault fails; see fakeVault.mode.
type vaultMode struct {
	kind       string // normal, down, unavailable, forbidden, throttled, slow
	retryAfter int
	delay      time.Duration
}

func (m vaultMode) String() string {
	switch m.kind {
	case "throttled":
		return fmt.Sprintf("throttled(Retry-After: %d)", m.retryAfter)
	case "slow":
		return fmt.Sprintf("slow(%v)", m.delay)
	}
	return m.kind
}

var (
	// vaultNormal answers as Key Vault does.
	vaultNormal = vaultMode{kind: "normal"}
	// vaultDown accepts the TCP/TLS connection, reads the request and closes
	// the connection without any response (every request, even the challenge).
	vaultDown = vaultMode{kind: "down"}
	// vaultUnavailable answers every request 503 ServiceUnavailable.
	vaultUnavailable = vaultMode{kind: "unavailable"}
	// vaultForbidden answers authenticated secret GETs 403 Forbidden /
	// AccessDenied ("does not have secrets get permission"); the 401
	// challenge to unauthenticated requests still happens first.
	vaultForbidden = vaultMode{kind: "forbidden"}
)

// vaultThrottled answers authenticated secret GETs 429 with Retry-After.
func vaultThrottled(retryAfterSeconds int) vaultMode {
	return vaultMode{kind: "throttled", retryAfter: retryAfterSeconds}
}

// vaultSlow sleeps d before answering each request normally.
func vaultSlow(d time.Duration) vaultMode { return vaultMode{kind: "slow", delay: d} }

// Outcomes recorded per request (fakeVault.count).
const (
	outcomeOK           = "ok"           // 200 with the secret
	outcomeChallenge    = "challenge"    // 401: no bearer token
	outcomeUnauthorized = "unauthorized" // 401: a token the vault does not accept
	outcomeNotFound     = "not_found"    // 404 SecretNotFound
	outcomeDisabled     = "disabled"     // 403 Forbidden / SecretDisabled
	outcomeForbidden    = "forbidden"    // 403 Forbidden / AccessDenied (mode)
	outcomeThrottled    = "throttled"    // 429 (mode)
	outcomeUnavailable  = "unavailable"  // 503 (mode)
	outcomeDropped      = "dropped"      // connection closed without response (mode)
	outcomeBadRequest   = "bad_request"  // 400/404/405 for what the SDK never sends
)

// vaultRequest is one request the fake vault received.
type vaultRequest struct {
	Time       time.Time
	Method     string
	Path       string
	APIVersion string
	Name       string
	Version    string // as requested; "" means latest
	Served     string // the version served, when Outcome is ok
	Authorized bool   // carried a token the vault accepts
	ClientID   string // identity the token was issued to ("" = system-assigned)
	Mode       string
	Outcome    string
	Status     int // 0 when dropped
}

type secretVersion struct {
	id          string
	value       string
	enabled     bool
	expires     *time.Time
	notBefore   *time.Time
	contentType string
	created     time.Time
	updated     time.Time
}

// secretOption adjusts a version added by setSecret.
type secretOption func(*secretVersion)

// secretDisabled adds the version disabled: Key Vault then refuses to return
// it (403 Forbidden, inner code SecretDisabled), as the real service does.
func secretDisabled() secretOption { return func(v *secretVersion) { v.enabled = false } }

// secretExpires sets the version's exp attribute. Key Vault does not enforce
// exp on secret GETs: an expired version is still returned, with the date.
func secretExpires(at time.Time) secretOption {
	return func(v *secretVersion) { t := at.UTC().Truncate(time.Second); v.expires = &t }
}

// secretNotBefore sets the nbf attribute (likewise informational for GETs).
func secretNotBefore(at time.Time) secretOption {
	return func(v *secretVersion) { t := at.UTC().Truncate(time.Second); v.notBefore = &t }
}

// secretContentType sets contentType.
func secretContentType(ct string) secretOption {
	return func(v *secretVersion) { v.contentType = ct }
}

// fakeVault is a Key Vault secrets endpoint on https://127.0.0.1:<port>.
type fakeVault struct {
	srv  *httptest.Server
	quit chan struct{}

	mu        sync.Mutex
	secrets   map[string][]*secretVersion // versions oldest first; the last is latest
	cur       vaultMode
	remaining int // requests left in cur before reverting to normal; <0: forever
	counts    map[string]int
	log       []vaultRequest
}

// newFakeVault starts a fake vault (TLS, HTTP/1.1), closed at cleanup. It
// accepts tokens from any fakeIdentity in the process.
func newFakeVault(t testing.TB) *fakeVault {
	t.Helper()
	if sharedIdentity == nil {
		t.Fatal("fakeVault needs the package TestMain (SSL_CERT_FILE, managed identity env)")
	}
	fv := &fakeVault{
		quit:      make(chan struct{}),
		secrets:   map[string][]*secretVersion{},
		cur:       vaultNormal,
		remaining: -1,
		counts:    map[string]int{},
	}
	fv.srv = httptest.NewUnstartedServer(http.HandlerFunc(fv.serve))
	fv.srv.StartTLS()
	t.Cleanup(func() {
		close(fv.quit)
		fv.srv.CloseClientConnections()
		fv.srv.Close()
	})
	return fv
}

// vaultURL is https://127.0.0.1:<port>, the vault's base URL.
func (fv *fakeVault) vaultURL() string { return fv.srv.URL }

// secretURL is the secret identifier URL; version "" names the latest.
func (fv *fakeVault) secretURL(name, version string) string {
	u := fv.srv.URL + "/secrets/" + name
	if version != "" {
		u += "/" + version
	}
	return u
}

// setSecret adds a new version of name holding value, makes it the latest and
// returns its version ID (32 hex digits).
func (fv *fakeVault) setSecret(name, value string, opts ...secretOption) string {
	now := time.Now().UTC().Truncate(time.Second)
	v := &secretVersion{id: randomHex(16), value: value, enabled: true, created: now, updated: now}
	for _, o := range opts {
		o(v)
	}
	fv.mu.Lock()
	defer fv.mu.Unlock()
	fv.secrets[strings.ToLower(name)] = append(fv.secrets[strings.ToLower(name)], v)
	return v.id
}

// setEnabled enables or disables an existing version ("" = latest).
func (fv *fakeVault) setEnabled(name, version string, enabled bool) {
	fv.mu.Lock()
	defer fv.mu.Unlock()
	if v := fv.find(name, version); v != nil {
		v.enabled = enabled
		v.updated = time.Now().UTC().Truncate(time.Second)
		return
	}
	panic(fmt.Sprintf("fakeVault.setEnabled: no secret %s/%s", name, version))
}

// deleteSecret removes every version of name; GETs then answer 404.
func (fv *fakeVault) deleteSecret(name string) {
	fv.mu.Lock()
	defer fv.mu.Unlock()
	delete(fv.secrets, strings.ToLower(name))
}

// versions lists name's version IDs, oldest first (the last is latest).
func (fv *fakeVault) versions(name string) []string {
	fv.mu.Lock()
	defer fv.mu.Unlock()
	var ids []string
	for _, v := range fv.secrets[strings.ToLower(name)] {
		ids = append(ids, v.id)
	}
	return ids
}

// mode switches the failure behaviour for all requests from now on.
func (fv *fakeVault) mode(m vaultMode) {
	fv.mu.Lock()
	defer fv.mu.Unlock()
	fv.cur, fv.remaining = m, -1
}

// modeFor applies m to the next n requests it shapes, then reverts to normal.
// (down, unavailable and slow shape every request, including the unauthenticated
// challenge request; forbidden and throttled only authenticated secret GETs.)
func (fv *fakeVault) modeFor(n int, m vaultMode) {
	fv.mu.Lock()
	defer fv.mu.Unlock()
	fv.cur, fv.remaining = m, n
}

// count is the number of requests with this outcome (outcome* constants).
func (fv *fakeVault) count(outcome string) int {
	fv.mu.Lock()
	defer fv.mu.Unlock()
	return fv.counts[outcome]
}

// okGets is the number of secret GETs answered 200.
func (fv *fakeVault) okGets() int { return fv.count(outcomeOK) }

// totalGets is the number of requests received, challenges included.
func (fv *fakeVault) totalGets() int {
	fv.mu.Lock()
	defer fv.mu.Unlock()
	return len(fv.log)
}

// allCounts returns a copy of the per-outcome counters.
func (fv *fakeVault) allCounts() map[string]int {
	fv.mu.Lock()
	defer fv.mu.Unlock()
	out := make(map[string]int, len(fv.counts))
	for k, v := range fv.counts {
		out[k] = v
	}
	return out
}

// requests returns every request received so far, oldest first.
func (fv *fakeVault) requests() []vaultRequest {
	fv.mu.Lock()
	defer fv.mu.Unlock()
	return append([]vaultRequest(nil), fv.log...)
}

// resetCounts forgets counters and the request log.
func (fv *fakeVault) resetCounts() {
	fv.mu.Lock()
	defer fv.mu.Unlock()
	fv.counts = map[string]int{}
	fv.log = nil
}

// waitOKGets waits until at least n secret GETs were answered 200.
func (fv *fakeVault) waitOKGets(t testing.TB, n int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for fv.okGets() < n {
		if time.Now().After(deadline) {
			t.Fatalf("fake vault: %d ok GETs after %v, want %d; counts %v", fv.okGets(), timeout, n, fv.allCounts())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// find returns the version ("" = latest) or nil; fv.mu must be held.
func (fv *fakeVault) find(name, version string) *secretVersion {
	vs := fv.secrets[strings.ToLower(name)]
	if len(vs) == 0 {
		return nil
	}
	if version == "" {
		return vs[len(vs)-1]
	}
	for _, v := range vs {
		if strings.EqualFold(v.id, version) {
			return v
		}
	}
	return nil
}

// takeMode returns the mode if it applies to a request of this kind (shapes
// reports whether the mode wants it) and consumes one use of a modeFor.
func (fv *fakeVault) takeMode(shapes func(vaultMode) bool) (vaultMode, bool) {
	fv.mu.Lock()
	defer fv.mu.Unlock()
	m := fv.cur
	if m.kind == "normal" || !shapes(m) {
		return m, false
	}
	if fv.remaining > 0 {
		fv.remaining--
		if fv.remaining == 0 {
			fv.cur, fv.remaining = vaultNormal, -1
		}
	}
	return m, true
}

func (fv *fakeVault) record(rec vaultRequest) {
	fv.mu.Lock()
	defer fv.mu.Unlock()
	fv.counts[rec.Outcome]++
	fv.log = append(fv.log, rec)
}

// kvError writes Key Vault's error body.
func kvError(w http.ResponseWriter, status int, code, msg, inner string) {
	e := map[string]any{"code": code, "message": msg}
	if inner != "" {
		e["innererror"] = map[string]any{"code": inner}
	}
	writeKVJSON(w, status, map[string]any{"error": e})
}

func writeKVJSON(w http.ResponseWriter, status int, body any) {
	var b bytes.Buffer
	_ = json.NewEncoder(&b).Encode(body)
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Content-Length", strconv.Itoa(b.Len()))
	w.WriteHeader(status)
	_, _ = w.Write(b.Bytes())
}

func (fv *fakeVault) serve(w http.ResponseWriter, r *http.Request) {
	rec := vaultRequest{Time: time.Now(), Method: r.Method, Path: r.URL.Path, APIVersion: r.URL.Query().Get("api-version")}
	w.Header().Set("x-ms-request-id", uniqueClientID())
	w.Header().Set("x-ms-keyvault-service-version", "1.9.0.0")
	w.Header().Set("x-ms-keyvault-region", "westeurope")
	defer func() { fv.record(rec) }()

	// Modes that shape every request, before routing and authentication.
	if m, ok := fv.takeMode(func(m vaultMode) bool { return m.kind == "down" || m.kind == "unavailable" || m.kind == "slow" }); ok {
		rec.Mode = m.String()
		switch m.kind {
		case "down":
			rec.Outcome = outcomeDropped
			if hj, ok := w.(http.Hijacker); ok {
				if conn, _, err := hj.Hijack(); err == nil {
					conn.Close()
					return
				}
			}
			panic(http.ErrAbortHandler) // closes the connection (or resets the stream)
		case "unavailable":
			rec.Outcome, rec.Status = outcomeUnavailable, http.StatusServiceUnavailable
			kvError(w, rec.Status, "ServiceUnavailable", "The service is temporarily unavailable. Please retry later.", "")
			return
		case "slow":
			select {
			case <-time.After(m.delay):
			case <-r.Context().Done():
			case <-fv.quit:
			}
		}
	}

	// Route: /secrets/{name}, /secrets/{name}/, /secrets/{name}/{version}.
	rest, isSecrets := strings.CutPrefix(r.URL.Path, "/secrets/")
	name, version, _ := strings.Cut(rest, "/")
	rec.Name, rec.Version = name, version
	switch {
	case !isSecrets || name == "" || strings.Contains(version, "/"):
		rec.Outcome, rec.Status = outcomeBadRequest, http.StatusNotFound
		kvError(w, rec.Status, "NotFound", "The requested path "+strconv.Quote(r.URL.Path)+" is not served by this fake vault.", "")
		return
	case r.Method != http.MethodGet:
		rec.Outcome, rec.Status = outcomeBadRequest, http.StatusMethodNotAllowed
		kvError(w, rec.Status, "MethodNotAllowed", "Only secret GETs are served by this fake vault.", "")
		return
	case rec.APIVersion == "":
		rec.Outcome, rec.Status = outcomeBadRequest, http.StatusBadRequest
		kvError(w, rec.Status, "BadParameter", "The request URI must contain an api-version query parameter.", "")
		return
	}

	// Authentication: the challenge, as Key Vault sends it.
	auth := r.Header.Get("Authorization")
	tok, isBearer := strings.CutPrefix(auth, "Bearer ")
	if !isBearer || tok == "" {
		rec.Outcome, rec.Status = outcomeChallenge, http.StatusUnauthorized
		w.Header().Set("WWW-Authenticate", vaultChallenge)
		kvError(w, rec.Status, "Unauthorized", "AKV10000: Request is missing a Bearer or PoP token.", "")
		return
	}
	g, ok := lookupToken(tok)
	if !ok || g.Resource != vaultResource || time.Now().After(g.Expires) {
		rec.Outcome, rec.Status = outcomeUnauthorized, http.StatusUnauthorized
		w.Header().Set("WWW-Authenticate", vaultChallenge)
		kvError(w, rec.Status, "Unauthorized", "AKV10032: Invalid issuer, audience or expired token.", "")
		return
	}
	rec.Authorized, rec.ClientID = true, g.ClientID

	// Modes that shape authenticated requests.
	if m, ok := fv.takeMode(func(m vaultMode) bool { return m.kind == "forbidden" || m.kind == "throttled" }); ok {
		rec.Mode = m.String()
		switch m.kind {
		case "forbidden":
			rec.Outcome, rec.Status = outcomeForbidden, http.StatusForbidden
			who := g.ClientID
			if who == "" {
				who = "system-assigned"
			}
			kvError(w, rec.Status, "Forbidden", fmt.Sprintf("The user, group or application 'appid=%s;iss=https://sts.windows.net/%s/' does not have secrets get permission on key vault 'fakevault;location=westeurope'. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125287", who, fakeTenantID), "AccessDenied")
		case "throttled":
			rec.Outcome, rec.Status = outcomeThrottled, http.StatusTooManyRequests
			w.Header().Set("Retry-After", strconv.Itoa(m.retryAfter))
			kvError(w, rec.Status, "Throttled", "Request was not processed because too many requests were received. Reason: A generic throttling rule was applied.", "")
		}
		return
	}

	fv.mu.Lock()
	v := fv.find(name, version)
	var snap secretVersion
	if v != nil {
		snap = *v
	}
	fv.mu.Unlock()
	switch {
	case v == nil:
		rec.Outcome, rec.Status = outcomeNotFound, http.StatusNotFound
		what := name
		if version != "" {
			what += "/" + version
		}
		kvError(w, rec.Status, "SecretNotFound", fmt.Sprintf("A secret with (name/id) %s was not found in this key vault. If you recently deleted this secret you may be able to recover it using the correct recovery command. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182", what), "")
		return
	case !snap.enabled:
		rec.Outcome, rec.Status = outcomeDisabled, http.StatusForbidden
		kvError(w, rec.Status, "Forbidden", "Operation get is not allowed on a disabled secret.", "SecretDisabled")
		return
	}
	attrs := map[string]any{
		"enabled":         true,
		"created":         snap.created.Unix(),
		"updated":         snap.updated.Unix(),
		"recoveryLevel":   "Recoverable+Purgeable",
		"recoverableDays": 90,
	}
	if snap.expires != nil {
		attrs["exp"] = snap.expires.Unix()
	}
	if snap.notBefore != nil {
		attrs["nbf"] = snap.notBefore.Unix()
	}
	body := map[string]any{
		"value":      snap.value,
		"id":         "https://" + r.Host + "/secrets/" + name + "/" + snap.id,
		"attributes": attrs,
	}
	if snap.contentType != "" {
		body["contentType"] = snap.contentType
	}
	rec.Outcome, rec.Status, rec.Served = outcomeOK, http.StatusOK, snap.id
	writeKVJSON(w, rec.Status, body)
}
