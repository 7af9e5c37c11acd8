package module

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets"

	"github.com/acsproxy/caddy-acs-hmac/signer"
)

func TestParseSecretID(t *testing.T) {
	for _, tc := range []struct {
		in, vault, name, version, err string
	}{
		{in: "https://contoso-kv.vault.azure.net/secrets/acs", vault: "https://contoso-kv.vault.azure.net", name: "acs"},
		{in: "https://contoso-kv.vault.azure.net/secrets/acs/", vault: "https://contoso-kv.vault.azure.net", name: "acs"},
		{in: " https://Contoso-KV.vault.azure.net/secrets/acs-conn/0123456789abcdef0123456789abcdef ", vault: "https://contoso-kv.vault.azure.net", name: "acs-conn", version: "0123456789abcdef0123456789abcdef"},
		{in: "https://kv.vault.azure.cn/secrets/acs", vault: "https://kv.vault.azure.cn", name: "acs"},
		{in: "https://kv.vault.usgovcloudapi.net/secrets/acs", vault: "https://kv.vault.usgovcloudapi.net", name: "acs"},
		{in: "https://127.0.0.1:8443/secrets/acs/v1", vault: "https://127.0.0.1:8443", name: "acs", version: "v1"},
		{in: "http://kv.vault.azure.net/secrets/acs", err: "https"},
		{in: "kv.vault.azure.net/secrets/acs", err: "https"},
		{in: "https://kv.vault.azure.net/keys/acs", err: "/secrets/<name>"},
		{in: "https://kv.vault.azure.net/secrets", err: "/secrets/<name>"},
		{in: "https://kv.vault.azure.net/secrets/a/b/c", err: "/secrets/<name>"},
		{in: "https://kv.vault.azure.net/secrets/bad_name", err: "not a valid secret name"},
		{in: "https://kv.vault.azure.net/secrets/acs/v-1", err: "not a valid secret version"},
		{in: "https://kv.vault.azure.net/secrets/acs?api-version=7.4", err: "no user info, query"},
		{in: "https://user:pw@kv.vault.azure.net/secrets/acs", err: "no user info, query"},
		{in: "https://", err: "https"},
	} {
		id, err := parseSecretID(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: error %v, want one containing %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tc.in, err)
			continue
		}
		if id.vault != tc.vault || id.name != tc.name || id.version != tc.version {
			t.Errorf("%q: got %+v", tc.in, id)
		}
	}
}

// fakeGetter is a secretGetter whose answers the test sets.
type fakeGetter struct {
	mu      sync.Mutex
	value   string
	version string
	attrs   *azsecrets.SecretAttributes
	err     error
	delay   time.Duration
	calls   atomic.Int32
}

func (g *fakeGetter) set(value, version string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.value, g.version, g.err = value, version, nil
}

func (g *fakeGetter) fail(err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.err = err
}

func (g *fakeGetter) GetSecret(ctx context.Context, name, version string, _ *azsecrets.GetSecretOptions) (azsecrets.GetSecretResponse, error) {
	g.calls.Add(1)
	g.mu.Lock()
	value, ver, attrs, err, delay := g.value, g.version, g.attrs, g.err, g.delay
	g.mu.Unlock()
	if delay > 0 {
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return azsecrets.GetSecretResponse{}, ctx.Err()
		}
	}
	if err != nil {
		return azsecrets.GetSecretResponse{}, err
	}
	id := azsecrets.ID("https://kv.vault.azure.net/secrets/" + name + "/" + ver)
	return azsecrets.GetSecretResponse{Secret: azsecrets.Secret{Value: &value, ID: &id, Attributes: attrs}}, nil
}

func testKey(t *testing.T, seed string) (string, *signer.Key) {
	t.Helper()
	b64 := base64.StdEncoding.EncodeToString([]byte("key-material-" + seed))
	k, err := signer.ParseKey(b64)
	if err != nil {
		t.Fatal(err)
	}
	return b64, k
}

func newTestFetcher(t *testing.T, g *fakeGetter, refresh time.Duration) *vaultFetcher {
	t.Helper()
	f, err := startVaultFetcher(g, secretID{vault: "https://kv.vault.azure.net", name: "acs"}, "managed_identity", refresh)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.Destruct() })
	return f
}

func TestVaultFetcherRejectsUnusableSecrets(t *testing.T) {
	keyB64, _ := testKey(t, "a")
	past, future := time.Now().Add(-time.Hour), time.Now().Add(time.Hour)
	no := false
	for _, tc := range []struct {
		name  string
		value string
		attrs *azsecrets.SecretAttributes
		want  string
	}{
		{"disabled", keyB64, &azsecrets.SecretAttributes{Enabled: &no}, "disabled"},
		{"expired", keyB64, &azsecrets.SecretAttributes{Expires: &past}, "expired"},
		{"not yet valid", keyB64, &azsecrets.SecretAttributes{NotBefore: &future}, "not valid before"},
		{"empty", "  ", nil, "empty"},
		{"not base64", "secret-value-*!", nil, "neither a connection string nor a base64 key"},
		{"bad connection string", "endpoint=ftp://x;accesskey=" + keyB64, nil, "neither a connection string nor a base64 key"},
	} {
		g := &fakeGetter{value: tc.value, version: "v1", attrs: tc.attrs}
		_, err := startVaultFetcher(g, secretID{vault: "https://kv.vault.azure.net", name: "acs"}, "default", time.Hour)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want %q", tc.name, err, tc.want)
			continue
		}
		for _, s := range []string{keyB64, tc.value} {
			if strings.TrimSpace(s) != "" && strings.Contains(err.Error(), s) {
				t.Errorf("%s: error contains the secret value: %v", tc.name, err)
			}
		}
		if !strings.Contains(err.Error(), "https://kv.vault.azure.net/secrets/acs") || !strings.Contains(err.Error(), "credential default") {
			t.Errorf("%s: error does not name the secret and credential: %v", tc.name, err)
		}
	}
}

func TestClassifyVaultError(t *testing.T) {
	resp := func(status int, code string, hdr http.Header) error {
		if hdr == nil {
			hdr = http.Header{}
		}
		return &azcore.ResponseError{StatusCode: status, ErrorCode: code, RawResponse: &http.Response{StatusCode: status, Header: hdr}}
	}
	for _, tc := range []struct {
		err          error
		outcome      string
		msg          string
		retryAfterIs time.Duration
	}{
		{resp(404, "SecretNotFound", nil), "not_found", "does not exist", 0},
		{resp(403, "Forbidden", nil), "forbidden", "Key Vault Secrets User", 0},
		{resp(401, "Unauthorized", nil), "unauthorized", "rejected the credential", 0},
		{resp(429, "Throttled", http.Header{"Retry-After": {"7"}}), "throttled", "throttling", 7 * time.Second},
		{resp(503, "", nil), "error", "503", 0},
		{fmt.Errorf("wrapped: %w", context.DeadlineExceeded), "timeout", "no answer", 0},
	} {
		outcome, msg := classifyVaultError(tc.err)
		if outcome != tc.outcome || !strings.Contains(msg, tc.msg) {
			t.Errorf("%v: %s %q, want %s containing %q", tc.err, outcome, msg, tc.outcome, tc.msg)
		}
		if got := retryAfter(tc.err); got != tc.retryAfterIs {
			t.Errorf("%v: retryAfter %v, want %v", tc.err, got, tc.retryAfterIs)
		}
	}
}

// TestVaultFetcherRotationAndOutage: the background refresh picks up a new
// version; while the vault fails, the last good key keeps serving; it
// recovers by itself.
func TestVaultFetcherRotationAndOutage(t *testing.T) {
	aB64, a := testKey(t, "a")
	bB64, b := testKey(t, "b")
	g := &fakeGetter{value: aB64, version: "v1"}
	f := newTestFetcher(t, g, 50*time.Millisecond)
	waitForKey := func(want *signer.Key) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			c, err := f.credential()
			if err == nil && c.Key.Equal(want) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("key not picked up: %v", err)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitForKey(a)
	first, _ := f.credential()

	// same value again under a new version: the key pointer stays, so
	// comparisons with in-flight requests hold
	g.set(aB64, "v2")
	time.Sleep(200 * time.Millisecond)
	if c, _ := f.credential(); c.Key != first.Key {
		t.Error("an unchanged key was swapped")
	}

	g.fail(&azcore.ResponseError{StatusCode: 503, RawResponse: &http.Response{StatusCode: 503, Header: http.Header{}}})
	before := g.calls.Load()
	time.Sleep(300 * time.Millisecond)
	if g.calls.Load() == before {
		t.Fatal("no refresh attempts during the outage")
	}
	if c, err := f.credential(); err != nil || c.Key != first.Key {
		t.Fatalf("the last good key must keep serving during an outage: %v", err)
	}

	g.set(bB64, "v3")
	waitForKey(b)
}

// TestVaultFetcherRefetchCoalesced: a 401 storm makes one vault call, and a
// second storm within the rate limit makes none.
func TestVaultFetcherRefetchCoalesced(t *testing.T) {
	aB64, a := testKey(t, "a")
	bB64, b := testKey(t, "b")
	g := &fakeGetter{value: aB64, version: "v1"}
	f := newTestFetcher(t, g, time.Hour)
	used, _ := f.credential()
	if !used.Key.Equal(a) {
		t.Fatal("wrong first key")
	}
	g.set(bB64, "v2")
	g.mu.Lock()
	g.delay = 100 * time.Millisecond // so the storm overlaps the fetch
	g.mu.Unlock()
	before := g.calls.Load()

	var wg sync.WaitGroup
	var changed atomic.Int32
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, ok := f.refetch(context.Background(), used.Key)
			if ok && c.Key.Equal(b) {
				changed.Add(1)
			}
		}()
	}
	wg.Wait()
	if n := g.calls.Load() - before; n != 1 {
		t.Errorf("50 concurrent 401s made %d vault calls, want 1", n)
	}
	if changed.Load() != 50 {
		t.Errorf("%d of 50 callers got the new key", changed.Load())
	}

	// The new key is refused too: no vault call within the rate limit.
	nowUsed, _ := f.credential()
	before = g.calls.Load()
	if _, ok := f.refetch(context.Background(), nowUsed.Key); ok {
		t.Error("refetch reported a change without one")
	}
	if n := g.calls.Load() - before; n != 0 {
		t.Errorf("a 401 within %v of the last re-fetch made %d vault calls", minRefetchInterval, n)
	}
	// A caller still holding the old key learns of the new one without a call.
	if c, ok := f.refetch(context.Background(), a); !ok || !c.Key.Equal(b) {
		t.Error("a caller with the old key was not given the new one")
	}
	if n := g.calls.Load() - before; n != 0 {
		t.Errorf("made %d vault calls", n)
	}
}

// TestVaultFetcherExpiryFailsClosed: once the secret version in use passes
// its expiry, there is no key: requests are refused, not signed with it.
func TestVaultFetcherExpiryFailsClosed(t *testing.T) {
	aB64, _ := testKey(t, "a")
	exp := time.Now().Add(300 * time.Millisecond)
	g := &fakeGetter{value: aB64, version: "v1", attrs: &azsecrets.SecretAttributes{Expires: &exp}}
	f := newTestFetcher(t, g, time.Hour)
	if _, err := f.credential(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Until(exp) + 50*time.Millisecond)
	_, err := f.credential()
	if !errors.Is(err, ErrNoKey) || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("after expiry: %v, want ErrNoKey naming the expiry", err)
	}
}

// TestVaultFetcherStops: Destruct ends the refresh goroutine, even in the
// middle of a slow fetch.
func TestVaultFetcherStops(t *testing.T) {
	aB64, _ := testKey(t, "a")
	g := &fakeGetter{value: aB64, version: "v1"}
	f, err := startVaultFetcher(g, secretID{vault: "https://kv.vault.azure.net", name: "acs"}, "default", 20*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	g.mu.Lock()
	g.delay = time.Hour
	g.mu.Unlock()
	time.Sleep(100 * time.Millisecond) // a fetch is now stuck in the fake
	done := make(chan struct{})
	go func() { _ = f.Destruct(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Destruct did not stop a fetcher stuck in a slow fetch")
	}
}

func TestBackoffAndJitter(t *testing.T) {
	var b time.Duration
	var seen []time.Duration
	for range 12 {
		b = nextBackoff(b, 5*time.Minute)
		seen = append(seen, b)
	}
	if seen[0] != time.Second || seen[1] != 2*time.Second || seen[len(seen)-1] != 5*time.Minute {
		t.Errorf("backoff sequence %v", seen)
	}
	if nextBackoff(0, 100*time.Millisecond) != 100*time.Millisecond {
		t.Error("the first backoff must not exceed the refresh interval")
	}
	for range 1000 {
		j := jitter(5 * time.Minute)
		if j < 270*time.Second || j > 330*time.Second {
			t.Fatalf("jitter %v outside ±10%%", j)
		}
	}
}
