package e2e

// Self-tests of the Key Vault / managed identity harness, with the real Azure
// SDK and no Caddy: if these pass, the fakes speak the protocols the plugin's
// azsecrets client will use.

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets"
)

// harnessClient builds an azsecrets client the way the plugin does (default
// transport, system cert pool), optionally with retry options.
func harnessClient(t *testing.T, fv *fakeVault, cred azcore.TokenCredential, retry *policy.RetryOptions) *azsecrets.Client {
	t.Helper()
	opts := &azsecrets.ClientOptions{DisableChallengeResourceVerification: true}
	if retry != nil {
		opts.Retry = *retry
	}
	c, err := azsecrets.NewClient(fv.vaultURL(), cred, opts)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func systemIdentity(t *testing.T) *azidentity.ManagedIdentityCredential {
	t.Helper()
	cred, err := azidentity.NewManagedIdentityCredential(nil)
	if err != nil {
		t.Fatal(err)
	}
	return cred
}

func userIdentity(t *testing.T, clientID string) *azidentity.ManagedIdentityCredential {
	t.Helper()
	cred, err := azidentity.NewManagedIdentityCredential(&azidentity.ManagedIdentityCredentialOptions{ID: azidentity.ClientID(clientID)})
	if err != nil {
		t.Fatal(err)
	}
	return cred
}

func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func wantResponseError(t *testing.T, err error, status int, code string) *azcore.ResponseError {
	t.Helper()
	var re *azcore.ResponseError
	if !errors.As(err, &re) {
		t.Fatalf("want *azcore.ResponseError %d %s, got %T: %v", status, code, err, err)
	}
	if re.StatusCode != status || re.ErrorCode != code {
		t.Fatalf("got %d %q, want %d %q: %v", re.StatusCode, re.ErrorCode, status, code, err)
	}
	return re
}

func TestVaultHarnessEnvironment(t *testing.T) {
	if os.Getenv("SSL_CERT_FILE") == "" || os.Getenv("IDENTITY_ENDPOINT") != sharedIdentity.endpoint() ||
		os.Getenv("IDENTITY_HEADER") != sharedIdentity.identityHeader() {
		t.Fatalf("TestMain did not prepare the environment: SSL_CERT_FILE=%q IDENTITY_ENDPOINT=%q",
			os.Getenv("SSL_CERT_FILE"), os.Getenv("IDENTITY_ENDPOINT"))
	}
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "AZURE_") && !strings.HasPrefix(kv, "AZURE_SDK_GO_LOGGING=") {
			t.Errorf("%s survived TestMain", kv)
		}
	}
	// A plain client on the system pool trusts the vault and gets the challenge.
	fv := newFakeVault(t)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{}}}
	resp, err := hc.Get(fv.secretURL("anything", "") + "?api-version=2026-04-01")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 401 || resp.Header.Get("WWW-Authenticate") != vaultChallenge || !strings.Contains(string(body), "AKV10000") {
		t.Fatalf("got %d %q %s", resp.StatusCode, resp.Header.Get("WWW-Authenticate"), body)
	}
	if fv.count(outcomeChallenge) != 1 || fv.totalGets() != 1 {
		t.Fatalf("counts %v", fv.allCounts())
	}
}

func TestVaultHarnessLatestAndPinned(t *testing.T) {
	fv := newFakeVault(t)
	v1 := fv.setSecret("acs-key", "endpoint=https://one.communication.azure.com/;accesskey=b25l")
	v2 := fv.setSecret("acs-key", "endpoint=https://two.communication.azure.com/;accesskey=dHdv")
	if len(v1) != 32 || v1 == v2 || strings.Join(fv.versions("acs-key"), ",") != v1+","+v2 {
		t.Fatalf("versions %q %q %q", v1, v2, fv.versions("acs-key"))
	}
	cred := systemIdentity(t)
	c := harnessClient(t, fv, cred, nil)
	ctx := ctxTimeout(t, 20*time.Second)

	latest, err := c.GetSecret(ctx, "acs-key", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if *latest.Value != "endpoint=https://two.communication.azure.com/;accesskey=dHdv" || latest.ID.Version() != v2 || latest.ID.Name() != "acs-key" {
		t.Fatalf("latest: %q %q", *latest.Value, *latest.ID)
	}
	if want := fv.secretURL("acs-key", v2); string(*latest.ID) != want {
		t.Fatalf("id %q, want %q", *latest.ID, want)
	}
	pinned, err := c.GetSecret(ctx, "acs-key", v1, nil)
	if err != nil {
		t.Fatal(err)
	}
	if *pinned.Value != "endpoint=https://one.communication.azure.com/;accesskey=b25l" || pinned.ID.Version() != v1 {
		t.Fatalf("pinned: %q %q", *pinned.Value, *pinned.ID)
	}
	if a := latest.Attributes; a == nil || a.Enabled == nil || !*a.Enabled || a.Expires != nil || a.Created == nil || a.Updated == nil {
		t.Fatalf("attributes %+v", a)
	}

	// One challenge for the client's first request, then one 200 per GET.
	if got := fv.allCounts(); got[outcomeChallenge] != 1 || got[outcomeOK] != 2 || fv.totalGets() != 3 {
		t.Fatalf("counts %v", got)
	}
	reqs := fv.requests()
	if reqs[1].Version != "" || reqs[1].Served != v2 || reqs[2].Version != v1 || reqs[2].Served != v1 ||
		!reqs[1].Authorized || reqs[1].ClientID != "" || reqs[1].APIVersion != "2026-04-01" || reqs[1].Path != "/secrets/acs-key/" {
		t.Fatalf("requests %+v", reqs)
	}

	// /secrets/{name} without the trailing slash is the latest too.
	tok, err := cred.GetToken(ctx, policy.TokenRequestOptions{Scopes: []string{vaultResource + "/.default"}})
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("GET", fv.secretURL("acs-key", "")+"?api-version=7.4", nil)
	req.Header.Set("Authorization", "Bearer "+tok.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), v2) {
		t.Fatalf("no-slash latest: %d %s", resp.StatusCode, body)
	}

	// The system-assigned token came from the endpoint (perhaps in an earlier
	// test: MSAL caches it process-wide), with the identity header.
	calls := sharedIdentity.callsFor("")
	if len(calls) == 0 {
		t.Fatal("the token endpoint was never asked for a system-assigned token")
	}
	for _, c := range calls {
		if c.Status == 200 && (!c.HeaderOK || c.APIVersion != "2019-08-01" || c.Resource != vaultResource) {
			t.Fatalf("token call %+v", c)
		}
	}
}

func TestVaultHarnessNotFound(t *testing.T) {
	fv := newFakeVault(t)
	fv.setSecret("present", "x")
	c := harnessClient(t, fv, systemIdentity(t), nil)
	ctx := ctxTimeout(t, 20*time.Second)

	_, err := c.GetSecret(ctx, "absent", "", nil)
	wantResponseError(t, err, 404, "SecretNotFound")
	if !strings.Contains(err.Error(), "A secret with (name/id) absent was not found") {
		t.Fatalf("message: %v", err)
	}
	_, err = c.GetSecret(ctx, "present", strings.Repeat("0", 32), nil)
	wantResponseError(t, err, 404, "SecretNotFound")
	fv.deleteSecret("present")
	_, err = c.GetSecret(ctx, "present", "", nil)
	wantResponseError(t, err, 404, "SecretNotFound")
	if got := fv.count(outcomeNotFound); got != 3 {
		t.Fatalf("404s %d (no retries expected), counts %v", got, fv.allCounts())
	}
}

func TestVaultHarnessForbidden(t *testing.T) {
	fv := newFakeVault(t)
	fv.setSecret("acs-key", "x")
	fv.mode(vaultForbidden)
	c := harnessClient(t, fv, systemIdentity(t), nil)
	_, err := c.GetSecret(ctxTimeout(t, 20*time.Second), "acs-key", "", nil)
	wantResponseError(t, err, 403, "Forbidden")
	if !strings.Contains(err.Error(), "does not have secrets get permission") || !strings.Contains(err.Error(), "AccessDenied") {
		t.Fatalf("message: %v", err)
	}
	if got := fv.allCounts(); got[outcomeForbidden] != 1 || got[outcomeChallenge] != 1 {
		t.Fatalf("403 is not retried; counts %v", got)
	}
	fv.mode(vaultNormal)
	if _, err := c.GetSecret(context.Background(), "acs-key", "", nil); err != nil {
		t.Fatal(err)
	}
}

func TestVaultHarnessThrottled(t *testing.T) {
	fv := newFakeVault(t)
	fv.setSecret("acs-key", "x")
	cred := systemIdentity(t)

	t.Run("no retries", func(t *testing.T) {
		fv.resetCounts()
		fv.mode(vaultThrottled(7))
		defer fv.mode(vaultNormal)
		c := harnessClient(t, fv, cred, &policy.RetryOptions{MaxRetries: -1})
		start := time.Now()
		_, err := c.GetSecret(ctxTimeout(t, 20*time.Second), "acs-key", "", nil)
		re := wantResponseError(t, err, 429, "Throttled")
		if ra := re.RawResponse.Header.Get("Retry-After"); ra != "7" {
			t.Fatalf("Retry-After %q", ra)
		}
		if d := time.Since(start); d > 2*time.Second || fv.count(outcomeThrottled) != 1 {
			t.Fatalf("took %v, counts %v", d, fv.allCounts())
		}
	})

	t.Run("default retries honour Retry-After", func(t *testing.T) {
		fv.resetCounts()
		fv.modeFor(1, vaultThrottled(1))
		c := harnessClient(t, fv, cred, nil)
		start := time.Now()
		resp, err := c.GetSecret(ctxTimeout(t, 20*time.Second), "acs-key", "", nil)
		if err != nil {
			t.Fatal(err)
		}
		d := time.Since(start)
		if *resp.Value != "x" || d < 900*time.Millisecond || fv.count(outcomeThrottled) != 1 || fv.okGets() != 1 {
			t.Fatalf("took %v, counts %v", d, fv.allCounts())
		}
		t.Logf("429 Retry-After: 1, then 200: GetSecret took %v", d)
	})

	t.Run("Retry-After above MaxRetryDelay is not retried", func(t *testing.T) {
		fv.resetCounts()
		fv.mode(vaultThrottled(120)) // default MaxRetryDelay is 60s
		defer fv.mode(vaultNormal)
		c := harnessClient(t, fv, cred, nil)
		start := time.Now()
		_, err := c.GetSecret(ctxTimeout(t, 20*time.Second), "acs-key", "", nil)
		wantResponseError(t, err, 429, "Throttled")
		if d := time.Since(start); d > 2*time.Second || fv.count(outcomeThrottled) != 1 {
			t.Fatalf("took %v, counts %v", d, fv.allCounts())
		}
	})

	t.Run("persistent 429 with MaxRetries 2", func(t *testing.T) {
		fv.resetCounts()
		fv.mode(vaultThrottled(1))
		defer fv.mode(vaultNormal)
		c := harnessClient(t, fv, cred, &policy.RetryOptions{MaxRetries: 2})
		start := time.Now()
		_, err := c.GetSecret(ctxTimeout(t, 20*time.Second), "acs-key", "", nil)
		wantResponseError(t, err, 429, "Throttled")
		if d := time.Since(start); d < 1900*time.Millisecond || fv.count(outcomeThrottled) != 3 {
			t.Fatalf("took %v, counts %v", d, fv.allCounts())
		}
	})
}

func TestVaultHarnessUnavailable(t *testing.T) {
	fv := newFakeVault(t)
	fv.setSecret("acs-key", "x")
	fv.mode(vaultUnavailable)
	c := harnessClient(t, fv, systemIdentity(t), &policy.RetryOptions{MaxRetries: 2, RetryDelay: 10 * time.Millisecond})
	_, err := c.GetSecret(ctxTimeout(t, 20*time.Second), "acs-key", "", nil)
	wantResponseError(t, err, 503, "ServiceUnavailable")
	// 503 is retried; it also hits the unauthenticated challenge request, so
	// each try is one request.
	if got := fv.allCounts(); got[outcomeUnavailable] != 3 || len(got) != 1 {
		t.Fatalf("counts %v", got)
	}
}

func TestVaultHarnessDown(t *testing.T) {
	fv := newFakeVault(t)
	fv.setSecret("acs-key", "x")
	fv.mode(vaultDown)
	cred := systemIdentity(t)

	// No retries: the transport error comes back at once.
	c := harnessClient(t, fv, cred, &policy.RetryOptions{MaxRetries: -1})
	start := time.Now()
	_, err := c.GetSecret(ctxTimeout(t, 20*time.Second), "acs-key", "", nil)
	if err == nil || time.Since(start) > 2*time.Second {
		t.Fatalf("err %v after %v", err, time.Since(start))
	}
	var re *azcore.ResponseError
	if errors.As(err, &re) {
		t.Fatalf("a dropped connection is not a response: %v", err)
	}
	t.Logf("down, no retries: %v", err)

	// Default retries back off 0.8s, 2.4s, 5.6s (x0.8-1.3 jitter); a context
	// deadline bounds the call.
	c = harnessClient(t, fv, cred, nil)
	start = time.Now()
	_, err = c.GetSecret(ctxTimeout(t, 1500*time.Millisecond), "acs-key", "", nil)
	d := time.Since(start)
	if !errors.Is(err, context.DeadlineExceeded) || d > 3*time.Second {
		t.Fatalf("err %v after %v", err, d)
	}
	if fv.count(outcomeDropped) < 2 || fv.okGets() != 0 {
		t.Fatalf("counts %v", fv.allCounts())
	}
	t.Logf("down, default retries, 1.5s context: %v after %v; counts %v", err, d, fv.allCounts())

	fv.mode(vaultNormal)
	if _, err := c.GetSecret(ctxTimeout(t, 20*time.Second), "acs-key", "", nil); err != nil {
		t.Fatalf("recovery: %v", err)
	}
}

func TestVaultHarnessSlow(t *testing.T) {
	fv := newFakeVault(t)
	fv.setSecret("acs-key", "x")
	c := harnessClient(t, fv, systemIdentity(t), nil)

	fv.mode(vaultSlow(2 * time.Second))
	start := time.Now()
	_, err := c.GetSecret(ctxTimeout(t, 300*time.Millisecond), "acs-key", "", nil)
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 1500*time.Millisecond {
		t.Fatalf("err %v after %v", err, time.Since(start))
	}

	fv.mode(vaultSlow(100 * time.Millisecond))
	start = time.Now()
	resp, err := c.GetSecret(ctxTimeout(t, 20*time.Second), "acs-key", "", nil)
	if err != nil || *resp.Value != "x" || time.Since(start) < 100*time.Millisecond {
		t.Fatalf("err %v after %v", err, time.Since(start))
	}
}

func TestVaultHarnessDisabledAndExpired(t *testing.T) {
	fv := newFakeVault(t)
	old := fv.setSecret("acs-key", "old")
	exp := time.Now().Add(-time.Hour).Truncate(time.Second)
	nbf := time.Now().Add(-2 * time.Hour).Truncate(time.Second)
	expired := fv.setSecret("acs-key", "expired", secretExpires(exp), secretNotBefore(nbf), secretContentType("text/plain"))
	disabled := fv.setSecret("acs-key", "disabled", secretDisabled())
	c := harnessClient(t, fv, systemIdentity(t), nil)
	ctx := ctxTimeout(t, 20*time.Second)

	// The latest version is disabled: Key Vault refuses it.
	_, err := c.GetSecret(ctx, "acs-key", "", nil)
	wantResponseError(t, err, 403, "Forbidden")
	if !strings.Contains(err.Error(), "SecretDisabled") || !strings.Contains(err.Error(), "disabled secret") {
		t.Fatalf("message: %v", err)
	}
	_, err = c.GetSecret(ctx, "acs-key", disabled, nil)
	wantResponseError(t, err, 403, "Forbidden")

	// Expired is served, with its dates.
	resp, err := c.GetSecret(ctx, "acs-key", expired, nil)
	if err != nil {
		t.Fatal(err)
	}
	a := resp.Attributes
	if *resp.Value != "expired" || a == nil || a.Expires == nil || !a.Expires.Equal(exp) || a.NotBefore == nil || !a.NotBefore.Equal(nbf) ||
		a.Enabled == nil || !*a.Enabled || resp.ContentType == nil || *resp.ContentType != "text/plain" {
		t.Fatalf("expired: %+v %+v", resp.Secret, a)
	}
	if resp, err := c.GetSecret(ctx, "acs-key", old, nil); err != nil || *resp.Value != "old" {
		t.Fatalf("old: %v", err)
	}

	// Re-enabling makes the latest readable again; disabling an old version
	// affects only it.
	fv.setEnabled("acs-key", disabled, true)
	fv.setEnabled("acs-key", old, false)
	if resp, err := c.GetSecret(ctx, "acs-key", "", nil); err != nil || *resp.Value != "disabled" {
		t.Fatalf("re-enabled: %v", err)
	}
	_, err = c.GetSecret(ctx, "acs-key", old, nil)
	wantResponseError(t, err, 403, "Forbidden")
	if got := fv.allCounts(); got[outcomeDisabled] != 3 || got[outcomeOK] != 3 {
		t.Fatalf("counts %v", got)
	}
}

func TestIdentityHarnessUserAssigned(t *testing.T) {
	fv := newFakeVault(t)
	fv.setSecret("acs-key", "x")
	id := uniqueClientID()
	c := harnessClient(t, fv, userIdentity(t, id), nil)
	if _, err := c.GetSecret(ctxTimeout(t, 20*time.Second), "acs-key", "", nil); err != nil {
		t.Fatal(err)
	}
	calls := sharedIdentity.callsFor(id)
	if len(calls) != 1 {
		t.Fatalf("calls for %s: %+v", id, calls)
	}
	if c := calls[0]; c.Status != 200 || !c.HeaderOK || c.Header != sharedIdentity.identityHeader() ||
		c.APIVersion != "2019-08-01" || c.Resource != vaultResource {
		t.Fatalf("call %+v", c)
	}
	reqs := fv.requests()
	if last := reqs[len(reqs)-1]; last.Outcome != outcomeOK || last.ClientID != id {
		t.Fatalf("vault saw %+v", last)
	}

	// A second credential for the same identity is served from MSAL's
	// process-wide cache: no new token request.
	c2 := harnessClient(t, fv, userIdentity(t, id), nil)
	if _, err := c2.GetSecret(ctxTimeout(t, 20*time.Second), "acs-key", "", nil); err != nil {
		t.Fatal(err)
	}
	if n := len(sharedIdentity.callsFor(id)); n != 1 {
		t.Fatalf("MSAL cache: %d calls", n)
	}

	// Short-lived tokens (< 5 minutes) are never served from that cache.
	sharedIdentity.setTokenLifetime(t, 4*time.Minute)
	id2 := uniqueClientID()
	for i := 0; i < 2; i++ {
		tok, err := userIdentity(t, id2).GetToken(ctxTimeout(t, 20*time.Second), policy.TokenRequestOptions{Scopes: []string{vaultResource + "/.default"}})
		if err != nil {
			t.Fatal(err)
		}
		if d := time.Until(tok.ExpiresOn); d > 4*time.Minute || d < 3*time.Minute {
			t.Fatalf("expires in %v", d)
		}
	}
	if n := len(sharedIdentity.callsFor(id2)); n != 2 {
		t.Fatalf("short-lived tokens: %d calls", n)
	}
}

func TestIdentityHarnessRejections(t *testing.T) {
	ctx := ctxTimeout(t, 20*time.Second)
	scope := policy.TokenRequestOptions{Scopes: []string{vaultResource + "/.default"}}

	t.Run("wrong header", func(t *testing.T) {
		t.Setenv("IDENTITY_HEADER", "not-the-header")
		id := uniqueClientID()
		_, err := userIdentity(t, id).GetToken(ctx, scope)
		if err == nil {
			t.Fatal("token issued for a wrong X-IDENTITY-HEADER")
		}
		var afe *azidentity.AuthenticationFailedError
		if !errors.As(err, &afe) {
			t.Fatalf("%T: %v", err, err)
		}
		calls := sharedIdentity.callsFor(id)
		if len(calls) != 1 || calls[0].Status != 401 || calls[0].HeaderOK || calls[0].Header != "not-the-header" {
			t.Fatalf("calls %+v", calls)
		}
	})

	t.Run("unassigned client ID", func(t *testing.T) {
		good, bad := uniqueClientID(), uniqueClientID()
		sharedIdentity.assignClientIDs(t, good)
		if _, err := userIdentity(t, good).GetToken(ctx, scope); err != nil {
			t.Fatal(err)
		}
		_, err := userIdentity(t, bad).GetToken(ctx, scope)
		if err == nil || !strings.Contains(err.Error(), "No User Assigned") {
			t.Fatalf("unassigned: %v", err)
		}
		if calls := sharedIdentity.callsFor(bad); len(calls) != 1 || calls[0].Status != 400 {
			t.Fatalf("calls %+v", calls)
		}
	})

	t.Run("endpoint failing", func(t *testing.T) {
		sharedIdentity.fail(t, http.StatusForbidden)
		id := uniqueClientID()
		_, err := userIdentity(t, id).GetToken(ctx, scope)
		if err == nil {
			t.Fatal("no error")
		}
		if calls := sharedIdentity.callsFor(id); len(calls) != 1 || calls[0].Status != 403 {
			t.Fatalf("calls %+v", calls)
		}
	})

	t.Run("token the vault does not know", func(t *testing.T) {
		fv := newFakeVault(t)
		fv.setSecret("acs-key", "x")
		c := harnessClient(t, fv, staticToken("forged"), nil)
		_, err := c.GetSecret(ctx, "acs-key", "", nil)
		wantResponseError(t, err, 401, "Unauthorized")
		if got := fv.allCounts(); got[outcomeUnauthorized] == 0 || got[outcomeOK] != 0 {
			t.Fatalf("counts %v", got)
		}
	})
}

// staticToken is a credential that always returns the same token.
type staticToken string

func (s staticToken) GetToken(context.Context, policy.TokenRequestOptions) (azcore.AccessToken, error) {
	return azcore.AccessToken{Token: string(s), ExpiresOn: time.Now().Add(time.Hour)}, nil
}

func TestIdentityHarnessDefaultAzureCredential(t *testing.T) {
	fv := newFakeVault(t)
	fv.setSecret("acs-key", "x")
	scope := policy.TokenRequestOptions{Scopes: []string{vaultResource + "/.default"}}

	start := time.Now()
	dac, err := azidentity.NewDefaultAzureCredential(nil)
	if err != nil {
		t.Fatal(err)
	}
	built := time.Since(start)
	start = time.Now()
	if _, err := dac.GetToken(ctxTimeout(t, 20*time.Second), scope); err != nil {
		t.Fatal(err)
	}
	t.Logf("DefaultAzureCredential: constructed in %v, first token in %v", built, time.Since(start))
	c := harnessClient(t, fv, dac, nil)
	if _, err := c.GetSecret(ctxTimeout(t, 20*time.Second), "acs-key", "", nil); err != nil {
		t.Fatal(err)
	}

	// AZURE_CLIENT_ID selects the user-assigned identity DefaultAzureCredential's
	// managed identity asks for.
	id := uniqueClientID()
	t.Setenv("AZURE_CLIENT_ID", id)
	dac, err = azidentity.NewDefaultAzureCredential(nil)
	if err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	c = harnessClient(t, fv, dac, nil)
	if _, err := c.GetSecret(ctxTimeout(t, 20*time.Second), "acs-key", "", nil); err != nil {
		t.Fatal(err)
	}
	t.Logf("DefaultAzureCredential with AZURE_CLIENT_ID, fresh token: GetSecret in %v", time.Since(start))
	if calls := sharedIdentity.callsFor(id); len(calls) != 1 || !calls[0].HeaderOK {
		t.Fatalf("calls %+v", calls)
	}
	reqs := fv.requests()
	if last := reqs[len(reqs)-1]; last.ClientID != id || last.Outcome != outcomeOK {
		t.Fatalf("vault saw %+v", last)
	}
}

func TestVaultHarnessConcurrent(t *testing.T) {
	fv := newFakeVault(t)
	fv.setSecret("acs-key", "v0")
	c := harnessClient(t, fv, userIdentity(t, uniqueClientID()), &policy.RetryOptions{MaxRetries: -1})
	ctx := ctxTimeout(t, 30*time.Second)
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 10; i++ {
				if _, err := c.GetSecret(ctx, "acs-key", "", nil); err != nil {
					var re *azcore.ResponseError
					if !errors.As(err, &re) {
						errs <- err
					}
				}
			}
		}()
	}
	for i := 0; i < 10; i++ {
		fv.setSecret("acs-key", "v")
		fv.mode(vaultThrottled(1))
		_ = fv.requests()
		fv.mode(vaultNormal)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	got := fv.allCounts()
	if got[outcomeOK]+got[outcomeThrottled] != 80 {
		t.Fatalf("counts %v", got)
	}
}
