package module

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets"
	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/acsproxy/caddy-acs-hmac/signer"
)

func init() {
	caddy.RegisterModule(KeyVaultSource{})
}

// KeyVaultSource reads the key from an Azure Key Vault secret that holds a
// connection string or a bare base64 key. The first fetch happens at
// provisioning (a failure is a configuration error); afterwards the secret is
// re-fetched in the background every refresh interval, and at once (coalesced,
// rate-limited) when ACS answers 401. The last good key keeps serving while
// the vault is unreachable.
//
// Sources naming the same secret and credential share one fetcher and one
// cached key, across transports, handlers and config reloads.
type KeyVaultSource struct {
	// The secret identifier: https://<vault>.vault.azure.net/secrets/<name>[/<version>].
	// Without a version the latest is used (and rotation is followed); with
	// one, that version is pinned.
	SecretURL string `json:"secret_url,omitempty"`

	// How to authenticate to the vault. Default: {"kind": "default"}.
	AzureCredential *AzureCredential `json:"credential,omitempty"`

	// Background re-fetch interval (with ±10% jitter). Default: 5m.
	RefreshInterval caddy.Duration `json:"refresh,omitempty"`

	// Skip the check that the vault's authentication challenge names a
	// Key Vault resource: for emulators on other hosts.
	DisableChallengeResourceVerification bool `json:"disable_challenge_resource_verification,omitempty"`

	fetcher *vaultFetcher
	poolKey string
}

// AzureCredential chooses how Caddy authenticates to Key Vault. Every field
// expands placeholders at provisioning, so a client secret can stay
// "{env.AZURE_CLIENT_SECRET}" in the JSON config and the admin API.
type AzureCredential struct {
	// default (DefaultAzureCredential: environment, workload identity,
	// managed identity, Azure CLI, azd), managed_identity, workload_identity,
	// azure_cli or client_secret.
	Kind string `json:"kind,omitempty"`
	// managed_identity: a user-assigned identity's client ID (optional).
	// client_secret: the application (client) ID.
	ClientID string `json:"client_id,omitempty"`
	// client_secret: the tenant ID.
	TenantID string `json:"tenant_id,omitempty"`
	// client_secret: the secret; use a placeholder.
	ClientSecret string `json:"client_secret,omitempty"`
}

// Defaults and bounds of the Key Vault source.
const (
	DefaultVaultRefresh = 5 * time.Minute
	// vaultFetchTimeout bounds one fetch, the first one included.
	vaultFetchTimeout = 30 * time.Second
	// minRefetchInterval rate-limits 401-triggered fetches of one secret.
	minRefetchInterval = 10 * time.Second
)

// CaddyModule returns the Caddy module information.
func (KeyVaultSource) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  keySourceNamespace + ".azure_key_vault",
		New: func() caddy.Module { return new(KeyVaultSource) },
	}
}

// vaultFetchers holds the fetchers in use, one per secret and credential.
var vaultFetchers = caddy.NewUsagePool()

// secretID is a parsed secret identifier URL.
type secretID struct {
	vault   string // https://host[:port]
	name    string
	version string // "" = latest
}

func (s secretID) String() string {
	u := s.vault + "/secrets/" + s.name
	if s.version != "" {
		u += "/" + s.version
	}
	return u
}

var secretNameRE = regexp.MustCompile(`^[0-9A-Za-z-]{1,127}$`)
var secretVersionRE = regexp.MustCompile(`^[0-9A-Za-z]{1,64}$`)

// parseSecretID parses https://<vault host>/secrets/<name>[/<version>], as
// the portal's "Secret Identifier" shows it. Sovereign clouds (vault.azure.cn,
// vault.usgovcloudapi.net, ...) and emulators on other hosts work too.
func parseSecretID(raw string) (secretID, error) {
	u, err := url.Parse(strings.TrimSpace(raw))
	if err != nil {
		return secretID{}, fmt.Errorf("key_vault: %q is not a URL", raw)
	}
	if !strings.EqualFold(u.Scheme, "https") || u.Host == "" {
		return secretID{}, fmt.Errorf("key_vault: %q must be an https secret identifier: https://<vault>.vault.azure.net/secrets/<name>[/<version>]", raw)
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return secretID{}, fmt.Errorf("key_vault: %q: a secret identifier has no user info, query or fragment", raw)
	}
	parts := strings.Split(strings.Trim(u.Path, "/"), "/")
	if len(parts) < 2 || len(parts) > 3 || parts[0] != "secrets" {
		return secretID{}, fmt.Errorf("key_vault: %q: the path must be /secrets/<name>[/<version>]", raw)
	}
	id := secretID{vault: "https://" + strings.ToLower(u.Host), name: parts[1]}
	if !secretNameRE.MatchString(id.name) {
		return secretID{}, fmt.Errorf("key_vault: %q: %q is not a valid secret name (1-127 letters, digits and dashes)", raw, id.name)
	}
	if len(parts) == 3 {
		id.version = parts[2]
		if !secretVersionRE.MatchString(id.version) {
			return secretID{}, fmt.Errorf("key_vault: %q: %q is not a valid secret version", raw, id.version)
		}
	}
	return id, nil
}

// Provision finds or starts the fetcher for this secret and credential; a new
// fetcher fetches the secret once, bounded in time, and fails the config if
// that fails.
func (s *KeyVaultSource) Provision(ctx caddy.Context) error {
	rawURL, err := expand("key_vault", s.SecretURL)
	if err != nil {
		return err
	}
	id, err := parseSecretID(rawURL)
	if err != nil {
		return err
	}
	if s.RefreshInterval < 0 {
		return errors.New("key_vault: refresh must not be negative")
	}
	refresh := time.Duration(s.RefreshInterval)
	if refresh == 0 {
		refresh = DefaultVaultRefresh
	}
	credCfg := AzureCredential{Kind: "default"}
	if s.AzureCredential != nil {
		credCfg = *s.AzureCredential
	}
	if credCfg.Kind == "" {
		credCfg.Kind = "default"
	}
	for _, f := range []*string{&credCfg.ClientID, &credCfg.TenantID, &credCfg.ClientSecret} {
		if *f == "" {
			continue
		}
		if *f, err = expand("credential", *f); err != nil {
			return fmt.Errorf("key_vault %s: %w", id, err)
		}
	}
	if err := credCfg.validate(); err != nil {
		return fmt.Errorf("key_vault %s: %w", id, err)
	}

	secretDigest := sha256.Sum256([]byte(credCfg.ClientSecret))
	s.poolKey = strings.Join([]string{id.String(), credCfg.Kind, credCfg.ClientID, credCfg.TenantID,
		hex.EncodeToString(secretDigest[:8]), refresh.String(), strconv.FormatBool(s.DisableChallengeResourceVerification)}, "|")
	registerMetrics(ctx)
	val, _, err := vaultFetchers.LoadOrNew(s.poolKey, func() (caddy.Destructor, error) {
		cred, err := credCfg.build()
		if err != nil {
			return nil, fmt.Errorf("key_vault %s: credential %s: %w", id, credCfg.Kind, err)
		}
		client, err := azsecrets.NewClient(id.vault, cred, &azsecrets.ClientOptions{
			// Retries are ours (backoff, Retry-After, last good key), so one
			// fetch is one bounded try.
			ClientOptions:                        azcore.ClientOptions{Retry: policy.RetryOptions{MaxRetries: -1, TryTimeout: vaultFetchTimeout}},
			DisableChallengeResourceVerification: s.DisableChallengeResourceVerification,
		})
		if err != nil {
			return nil, fmt.Errorf("key_vault %s: %w", id, err)
		}
		return startVaultFetcher(client, id, credCfg.Kind, refresh)
	})
	if err != nil {
		return err
	}
	s.fetcher = val.(*vaultFetcher)
	return nil
}

// Cleanup releases this source's hold on the shared fetcher; the last
// release stops it.
func (s *KeyVaultSource) Cleanup() error {
	if s.fetcher == nil {
		return nil
	}
	_, err := vaultFetchers.Delete(s.poolKey)
	return err
}

// Credential implements KeySource.
func (s *KeyVaultSource) Credential() (signer.Credential, error) { return s.fetcher.credential() }

// Refresh implements Refresher.
func (s *KeyVaultSource) Refresh(ctx context.Context, used *signer.Key) (signer.Credential, bool) {
	return s.fetcher.refetch(ctx, used)
}

func (c AzureCredential) validate() error {
	switch c.Kind {
	case "default", "workload_identity", "azure_cli":
		if c.ClientID != "" || c.TenantID != "" || c.ClientSecret != "" {
			return fmt.Errorf("credential %s takes no arguments (it reads AZURE_CLIENT_ID, AZURE_TENANT_ID, ... from the environment)", c.Kind)
		}
	case "managed_identity":
		if c.TenantID != "" || c.ClientSecret != "" {
			return errors.New("credential managed_identity takes only an optional client ID")
		}
	case "client_secret":
		if c.TenantID == "" || c.ClientID == "" || c.ClientSecret == "" {
			return errors.New("credential client_secret needs <tenant id> <client id> <client secret>")
		}
	default:
		return fmt.Errorf("unknown credential %q: want default, managed_identity, workload_identity, azure_cli or client_secret", c.Kind)
	}
	return nil
}

func (c AzureCredential) build() (azcore.TokenCredential, error) {
	switch c.Kind {
	case "managed_identity":
		var opts azidentity.ManagedIdentityCredentialOptions
		if c.ClientID != "" {
			opts.ID = azidentity.ClientID(c.ClientID)
		}
		return azidentity.NewManagedIdentityCredential(&opts)
	case "workload_identity":
		return azidentity.NewWorkloadIdentityCredential(nil)
	case "azure_cli":
		return azidentity.NewAzureCLICredential(nil)
	case "client_secret":
		return azidentity.NewClientSecretCredential(c.TenantID, c.ClientID, c.ClientSecret, nil)
	default:
		return azidentity.NewDefaultAzureCredential(nil)
	}
}

// secretGetter is the part of *azsecrets.Client the fetcher uses.
type secretGetter interface {
	GetSecret(ctx context.Context, name, version string, options *azsecrets.GetSecretOptions) (azsecrets.GetSecretResponse, error)
}

// vaultKey is one fetched secret version.
type vaultKey struct {
	cred    signer.Credential
	version string
	expires time.Time // zero: none
	since   time.Time // when this key was first fetched
}

// vaultFetcher fetches one secret and keeps its latest good value.
type vaultFetcher struct {
	client   secretGetter
	id       secretID
	credKind string
	refresh  time.Duration
	logger   *zap.Logger

	cur atomic.Pointer[vaultKey]

	mu          sync.Mutex
	inflight    chan struct{} // closed when the running refetch ends
	lastRefetch time.Time

	stop chan struct{}
	done chan struct{}
}

// startVaultFetcher fetches the secret once (bounded) and starts refreshing.
func startVaultFetcher(client secretGetter, id secretID, credKind string, refresh time.Duration) (*vaultFetcher, error) {
	f := &vaultFetcher{client: client, id: id, credKind: credKind, refresh: refresh,
		stop: make(chan struct{}), done: make(chan struct{})}
	ctx, cancel := context.WithTimeout(context.Background(), vaultFetchTimeout)
	defer cancel()
	k, err := f.fetch(ctx)
	if err != nil {
		return nil, fmt.Errorf("key_vault %s (credential %s): %w", id, credKind, err)
	}
	f.store(k)
	sources.Store(f, struct{}{})
	go f.run()
	return f, nil
}

// Destruct stops the background refresh; called by the pool on last release.
func (f *vaultFetcher) Destruct() error {
	close(f.stop)
	<-f.done
	sources.Delete(f)
	return nil
}

// log is Caddy's current default logger: a fetcher outlives the config that
// started it, and with it that config's logger.
func (f *vaultFetcher) log() *zap.Logger { return caddy.Log().Named("acs_hmac.key_vault") }

// label names the secret in metrics: vault host, secret name and a pinned
// version, never a value.
func (f *vaultFetcher) label() string {
	l := strings.TrimPrefix(f.id.vault, "https://") + "/" + f.id.name
	if f.id.version != "" {
		l += "/" + f.id.version
	}
	return l
}

// fetch gets the secret once and turns it into a key.
func (f *vaultFetcher) fetch(ctx context.Context) (*vaultKey, error) {
	resp, err := f.client.GetSecret(ctx, f.id.name, f.id.version, nil)
	if err != nil {
		outcome, msg := classifyVaultError(err)
		metricKeyFetches.WithLabelValues(f.label(), outcome).Inc()
		return nil, &vaultError{outcome: outcome, msg: msg, retryAfter: retryAfter(err)}
	}
	k, err := f.parse(resp)
	if err != nil {
		metricKeyFetches.WithLabelValues(f.label(), "invalid").Inc()
		return nil, err
	}
	metricKeyFetches.WithLabelValues(f.label(), "ok").Inc()
	return k, nil
}

// parse checks a fetched secret: enabled, in date, holding a usable key.
// Errors never contain the value.
func (f *vaultFetcher) parse(resp azsecrets.GetSecretResponse) (*vaultKey, error) {
	k := &vaultKey{}
	if resp.ID != nil {
		k.version = resp.ID.Version()
	}
	now := time.Now()
	if a := resp.Attributes; a != nil {
		if a.Enabled != nil && !*a.Enabled {
			return nil, fmt.Errorf("secret version %s is disabled", k.version)
		}
		if a.Expires != nil {
			if !a.Expires.After(now) {
				return nil, fmt.Errorf("secret version %s expired at %s", k.version, a.Expires.UTC().Format(time.RFC3339))
			}
			k.expires = *a.Expires
		}
		if a.NotBefore != nil && a.NotBefore.After(now) {
			return nil, fmt.Errorf("secret version %s is not valid before %s", k.version, a.NotBefore.UTC().Format(time.RFC3339))
		}
	}
	if resp.Value == nil || strings.TrimSpace(*resp.Value) == "" {
		return nil, fmt.Errorf("secret version %s is empty", k.version)
	}
	cred, err := signer.ParseCredential(*resp.Value)
	if err != nil {
		return nil, fmt.Errorf("secret version %s holds neither a connection string nor a base64 key: %w", k.version, err)
	}
	k.cred = cred
	return k, nil
}

// store swaps k in if it is a different key, and logs the change.
func (f *vaultFetcher) store(k *vaultKey) {
	old := f.cur.Load()
	if old != nil && old.cred.Key.Equal(k.cred.Key) && sameEndpoint(old.cred, k.cred) {
		if old.version == k.version && old.expires.Equal(k.expires) {
			return // unchanged: keep the pointer, so in-flight comparisons hold
		}
		k.cred, k.since = old.cred, old.since
	} else {
		k.since = time.Now()
	}
	f.cur.Store(k)
	if old == nil {
		f.log().Info("key vault secret loaded", zap.String("secret", f.id.String()), zap.String("version", k.version), zap.String("key_id", k.cred.Key.ID()))
	} else if k.cred.Key != old.cred.Key {
		f.log().Info("key vault secret changed; new key in use", zap.String("secret", f.id.String()),
			zap.String("version", k.version), zap.String("previous_version", old.version),
			zap.String("key_id", k.cred.Key.ID()), zap.String("previous_key_id", old.cred.Key.ID()))
	}
}

func sameEndpoint(a, b signer.Credential) bool {
	if a.Endpoint == nil || b.Endpoint == nil {
		return a.Endpoint == b.Endpoint
	}
	return *a.Endpoint == *b.Endpoint
}

// credential returns the current key, unless it has passed its expiry.
func (f *vaultFetcher) credential() (signer.Credential, error) {
	k := f.cur.Load()
	if k == nil {
		return signer.Credential{}, fmt.Errorf("key_vault %s: %w", f.id, ErrNoKey)
	}
	if !k.expires.IsZero() && !time.Now().Before(k.expires) {
		return signer.Credential{}, fmt.Errorf("key_vault %s: secret version %s expired: %w", f.id, k.version, ErrNoKey)
	}
	return k.cred, nil
}

// run refreshes every f.refresh (±10%), backing off exponentially while
// fetches fail, honouring Retry-After.
func (f *vaultFetcher) run() {
	defer close(f.done)
	var backoff time.Duration
	t := time.NewTimer(jitter(f.refresh))
	defer t.Stop()
	for {
		select {
		case <-f.stop:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), vaultFetchTimeout)
		go func() { // a stop must not wait for a slow vault
			select {
			case <-f.stop:
				cancel()
			case <-ctx.Done():
			}
		}()
		k, err := f.fetch(ctx)
		cancel()
		if err == nil {
			f.store(k)
			backoff = 0
			t.Reset(jitter(f.refresh))
			continue
		}
		backoff = nextBackoff(backoff, f.refresh)
		wait := backoff
		var ve *vaultError
		if errors.As(err, &ve) && ve.retryAfter > wait {
			wait = ve.retryAfter
		}
		f.log().Warn("key vault refresh failed; the last good key keeps serving",
			zap.String("secret", f.id.String()), zap.String("credential", f.credKind),
			zap.String("error", err.Error()), zap.Duration("retry_in", wait))
		t.Reset(wait)
	}
}

// refetch is called after the upstream answered 401 to a request signed with
// used. If the current key differs from used, it is returned at once;
// otherwise one fetch runs for all concurrent callers, at most once per
// minRefetchInterval. It reports whether the returned key differs from used.
func (f *vaultFetcher) refetch(ctx context.Context, used *signer.Key) (signer.Credential, bool) {
	if cred, err := f.credential(); err == nil && cred.Key != used {
		return cred, true
	}
	f.mu.Lock()
	wait := f.inflight
	if wait == nil {
		if time.Since(f.lastRefetch) < minRefetchInterval {
			f.mu.Unlock()
			return signer.Credential{}, false
		}
		f.lastRefetch = time.Now()
		wait = make(chan struct{})
		f.inflight = wait
		f.mu.Unlock()
		// Independent of the request: one client giving up must not cancel
		// the fetch the others wait for.
		fctx, cancel := context.WithTimeout(context.Background(), vaultFetchTimeout)
		k, err := f.fetch(fctx)
		cancel()
		if err == nil {
			f.store(k)
		} else {
			f.log().Warn("key vault re-fetch after 401 failed", zap.String("secret", f.id.String()), zap.String("error", err.Error()))
		}
		f.mu.Lock()
		f.inflight = nil
		f.mu.Unlock()
		close(wait)
	} else {
		f.mu.Unlock()
		select {
		case <-wait:
		case <-ctx.Done():
			return signer.Credential{}, false
		}
	}
	cred, err := f.credential()
	if err != nil || cred.Key == used {
		return signer.Credential{}, false
	}
	return cred, true
}

// vaultError is a failed fetch: an outcome for metrics and a message that
// names the cause, never a value.
type vaultError struct {
	outcome    string
	msg        string
	retryAfter time.Duration
}

func (e *vaultError) Error() string { return e.msg }

// classifyVaultError turns an SDK error into an outcome and an explanation
// an operator can act on.
func classifyVaultError(err error) (outcome, msg string) {
	var re *azcore.ResponseError
	if errors.As(err, &re) {
		switch re.StatusCode {
		case http.StatusNotFound:
			return "not_found", fmt.Sprintf("the secret (or version) does not exist (404 %s)", re.ErrorCode)
		case http.StatusForbidden:
			if strings.Contains(re.Error(), "SecretDisabled") {
				return "disabled", "the secret (or version) is disabled (403 SecretDisabled)"
			}
			return "forbidden", fmt.Sprintf("access denied (403 %s): grant the identity the \"Key Vault Secrets User\" role on the vault or secret (or a get-secret access policy)", re.ErrorCode)
		case http.StatusUnauthorized:
			return "unauthorized", fmt.Sprintf("the vault rejected the credential (401 %s)", re.ErrorCode)
		case http.StatusTooManyRequests:
			return "throttled", "the vault is throttling requests (429)"
		default:
			return "error", fmt.Sprintf("the vault answered %d %s", re.StatusCode, re.ErrorCode)
		}
	}
	var afe *azidentity.AuthenticationFailedError
	if errors.As(err, &afe) || strings.Contains(err.Error(), "Credential") {
		return "credential", "getting a token failed: " + firstLine(err.Error())
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return "timeout", fmt.Sprintf("no answer within %s", vaultFetchTimeout)
	}
	return "error", firstLine(err.Error())
}

// retryAfter reads Retry-After from a throttled answer.
func retryAfter(err error) time.Duration {
	var re *azcore.ResponseError
	if !errors.As(err, &re) || re.RawResponse == nil {
		return 0
	}
	v := re.RawResponse.Header.Get("Retry-After")
	if s, err := strconv.Atoi(v); err == nil && s > 0 {
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return time.Until(t)
	}
	return 0
}

// firstLine folds a multi-line SDK error (DefaultAzureCredential lists every
// credential it tried) onto one line for logs and config errors.
func firstLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// jitter returns d ±10%, so many proxies do not hit the vault in step.
func jitter(d time.Duration) time.Duration {
	return d - d/10 + time.Duration(rand.Int64N(int64(d)/5+1))
}

// nextBackoff doubles from 1s (or the refresh, if shorter), never past the refresh interval.
func nextBackoff(prev, refresh time.Duration) time.Duration {
	if prev == 0 {
		return min(time.Second, refresh)
	}
	return min(prev*2, refresh)
}

// Interface guards
var (
	_ KeySource          = (*KeyVaultSource)(nil)
	_ Refresher          = (*KeyVaultSource)(nil)
	_ caddy.Provisioner  = (*KeyVaultSource)(nil)
	_ caddy.CleanerUpper = (*KeyVaultSource)(nil)
	_ caddy.Destructor   = (*vaultFetcher)(nil)
)
