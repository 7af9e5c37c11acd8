package module

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/acsproxy/caddy-acs-hmac/signer"
)

// utCaddyCtx returns a caddy.Context that is cancelled when the test ends,
// and its cancel function for tests that cancel it earlier.
func utCaddyCtx(t *testing.T) (caddy.Context, context.CancelFunc) {
	t.Helper()
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	t.Cleanup(cancel)
	return ctx, cancel
}

// utNewKey returns a fresh random access key as the portal shows it (base64
// of 32 bytes) and its decoded bytes.
func utNewKey(t *testing.T) (string, []byte) {
	t.Helper()
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(raw), raw
}

func utParsedKey(t *testing.T, b64 string) *signer.Key {
	t.Helper()
	k, err := signer.ParseKey(b64)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

var utStampSeq atomic.Int64

// utWriteFile replaces path atomically (write to a temporary file, rename, as
// a Kubernetes secret mount or the CSI driver do) and gives it a distinct
// modification time, so a poller always sees a change.
func utWriteFile(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	mt := time.Now().Add(time.Duration(utStampSeq.Add(1)) * time.Second)
	if err := os.Chtimes(tmp, mt, mt); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// utObserved returns a logger that records everything, and its records.
func utObserved() (*zap.Logger, *observer.ObservedLogs) {
	core, logs := observer.New(zapcore.DebugLevel)
	return zap.New(core), logs
}

// utLogText is every message and field of the recorded entries, as text.
func utLogText(logs *observer.ObservedLogs) string {
	var b strings.Builder
	for _, e := range logs.All() {
		fmt.Fprintf(&b, "%s %s %v\n", e.Level, e.Message, e.ContextMap())
	}
	return b.String()
}

func TestKeyFileSourceProvisionErrors(t *testing.T) {
	dir := t.TempDir()
	const garbage = "this-is-not-a-key s3cr3t-GARBAGE-content"
	keyB64, _ := utNewKey(t)
	for _, tc := range []struct {
		name     string
		content  *string // nil: no file
		wantIn   []string
		wantNot  []string
		wantNoKy bool
	}{
		{name: "missing file", wantIn: []string{"no such file"}},
		{name: "empty file", content: new(""), wantIn: []string{"empty"}},
		{name: "only white space", content: new(" \n\t\n")},
		{name: "oversize file", content: new(strings.Repeat("A", maxKeyFileSize+1)), wantIn: []string{"larger than"}},
		{name: "valid key padded past the size limit", content: new(keyB64 + strings.Repeat("\n", maxKeyFileSize)), wantIn: []string{"larger than"}, wantNot: []string{keyB64}},
		{name: "garbage", content: new(garbage), wantNot: []string{garbage, "s3cr3t", "GARBAGE"}},
		{name: "garbage connection string", content: new("endpoint=https://contoso.communication.azure.com/;accesskey=s3cr3t*GARBAGE*key"), wantNot: []string{"s3cr3t", "GARBAGE"}},
		{name: "connection string without endpoint", content: new("accesskey=" + keyB64), wantNot: []string{keyB64}},
		{name: "connection string with a bad endpoint", content: new("endpoint=ftp://contoso/;accesskey=" + keyB64), wantNot: []string{keyB64}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "_"))
			if tc.content != nil {
				if err := os.WriteFile(path, []byte(*tc.content), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			ctx, _ := utCaddyCtx(t)
			s := &KeyFileSource{Path: path, PollInterval: caddy.Duration(time.Hour)}
			err := s.Provision(ctx)
			if err == nil {
				t.Fatal("Provision succeeded")
			}
			msg := err.Error()
			if !strings.Contains(msg, path) {
				t.Errorf("error does not name the path %s: %s", path, msg)
			}
			for _, w := range tc.wantIn {
				if !strings.Contains(msg, w) {
					t.Errorf("error does not mention %q: %s", w, msg)
				}
			}
			for _, w := range tc.wantNot {
				if strings.Contains(msg, w) {
					t.Errorf("error contains file content %q: %s", w, msg)
				}
			}
			if _, err := s.Credential(); !errors.Is(err, ErrNoKey) {
				t.Errorf("Credential after failed Provision: err = %v, want ErrNoKey", err)
			}
		})
	}
}

func TestKeyFileSourceProvision(t *testing.T) {
	dir := t.TempDir()
	keyB64, _ := utNewKey(t)
	want := utParsedKey(t, keyB64)
	for _, tc := range []struct {
		name         string
		content      string
		wantEndpoint string // "" for a bare key
	}{
		{"bare key", keyB64, ""},
		{"bare key with newline", keyB64 + "\n", ""},
		{"bare key with surrounding space", "  \n" + keyB64 + " \r\n", ""},
		{"connection string", "endpoint=https://contoso.communication.azure.com/;accesskey=" + keyB64, "https://contoso.communication.azure.com"},
		{"connection string with newline", "endpoint=https://contoso.communication.azure.com/;accesskey=" + keyB64 + "\n", "https://contoso.communication.azure.com"},
		{"connection string, other order and case", "AccessKey=" + keyB64 + "; Endpoint=https://Contoso.communication.azure.com:443", "https://contoso.communication.azure.com"},
		{"connection string, non-default port", "endpoint=http://localhost:8081;accesskey=" + keyB64, "http://localhost:8081"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "_"))
			if err := os.WriteFile(path, []byte(tc.content), 0o600); err != nil {
				t.Fatal(err)
			}
			ctx, _ := utCaddyCtx(t)
			s := &KeyFileSource{Path: path}
			if err := s.Provision(ctx); err != nil {
				t.Fatalf("Provision: %v", err)
			}
			if s.PollInterval != caddy.Duration(DefaultKeyFilePoll) {
				t.Errorf("PollInterval = %v, want the default %v", time.Duration(s.PollInterval), DefaultKeyFilePoll)
			}
			cred, err := s.Credential()
			if err != nil {
				t.Fatalf("Credential: %v", err)
			}
			if !cred.Key.Equal(want) {
				t.Error("Credential holds a different key")
			}
			switch {
			case tc.wantEndpoint == "" && cred.Endpoint != nil:
				t.Errorf("bare key: Endpoint = %v, want nil", cred.Endpoint)
			case tc.wantEndpoint != "" && cred.Endpoint == nil:
				t.Errorf("connection string: Endpoint is nil, want %s", tc.wantEndpoint)
			case tc.wantEndpoint != "" && cred.Endpoint.String() != tc.wantEndpoint:
				t.Errorf("Endpoint = %s, want %s", cred.Endpoint, tc.wantEndpoint)
			}
		})
	}
}

func TestKeyFileSourcePathPlaceholder(t *testing.T) {
	dir := t.TempDir()
	keyB64, _ := utNewKey(t)
	path := filepath.Join(dir, "acs-key")
	if err := os.WriteFile(path, []byte(keyB64), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("UT_ACS_KEY_FILE_DIR", dir)
	ctx, _ := utCaddyCtx(t)
	s := &KeyFileSource{Path: "{env.UT_ACS_KEY_FILE_DIR}/acs-key", PollInterval: caddy.Duration(time.Hour)}
	if err := s.Provision(ctx); err != nil {
		t.Fatalf("Provision: %v", err)
	}
	if s.path != path {
		t.Errorf("expanded path %q, want %q", s.path, path)
	}
	out, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), `"path":"{env.UT_ACS_KEY_FILE_DIR}/acs-key"`) {
		t.Errorf("JSON after Provision lost the placeholder: %s", out)
	}

	s2 := &KeyFileSource{Path: "{env.UT_ACS_SURELY_UNSET_DIR}/acs-key"}
	err = s2.Provision(ctx)
	if err == nil || !strings.Contains(err.Error(), "{env.UT_ACS_SURELY_UNSET_DIR}") {
		t.Errorf("unset placeholder: err = %v, want one naming {env.UT_ACS_SURELY_UNSET_DIR}", err)
	}
}

func TestKeyFileSourceProvisionConfigErrors(t *testing.T) {
	ctx, _ := utCaddyCtx(t)
	if err := (&KeyFileSource{}).Provision(ctx); err == nil {
		t.Error("no path: Provision succeeded")
	}
	path := filepath.Join(t.TempDir(), "k")
	keyB64, _ := utNewKey(t)
	if err := os.WriteFile(path, []byte(keyB64), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := (&KeyFileSource{Path: path, PollInterval: -1}).Provision(ctx); err == nil {
		t.Error("negative poll_interval: Provision succeeded")
	}
}

func TestKeyFileSourceCheck(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "acs")
	keyA, _ := utNewKey(t)
	keyB, _ := utNewKey(t)
	keyC, _ := utNewKey(t)
	const garbage = "rotated-to-GARBAGE-c0ntent!!"
	utWriteFile(t, path, keyA)

	ctx, _ := utCaddyCtx(t)
	// A long poll interval: the watcher never ticks, the test calls check.
	s := &KeyFileSource{Path: path, PollInterval: caddy.Duration(time.Hour)}
	if err := s.Provision(ctx); err != nil {
		t.Fatalf("Provision: %v", err)
	}
	logger, logs := utObserved()
	s.logger = logger

	keyIs := func(step, b64 string) {
		t.Helper()
		cred, err := s.Credential()
		if err != nil {
			t.Fatalf("%s: Credential: %v", step, err)
		}
		if !cred.Key.Equal(utParsedKey(t, b64)) {
			t.Errorf("%s: Credential holds the wrong key", step)
		}
	}
	keyIs("after Provision", keyA)

	s.check()
	keyIs("unchanged file", keyA)
	if n := logs.Len(); n != 0 {
		t.Errorf("unchanged file: %d log entries, want none:\n%s", n, utLogText(logs))
	}

	// Same content, new modification time: re-read, no swap, no log.
	before, _ := s.Credential()
	utWriteFile(t, path, keyA)
	s.check()
	if after, _ := s.Credential(); after.Key != before.Key {
		t.Error("touching the file without changing it swapped the key")
	}
	if n := logs.Len(); n != 0 {
		t.Errorf("touched file: %d log entries, want none:\n%s", n, utLogText(logs))
	}

	utWriteFile(t, path, keyB)
	s.check()
	keyIs("changed key", keyB)
	if got := logs.FilterMessageSnippet("new key in use").Len(); got != 1 {
		t.Errorf("changed key: %d 'new key in use' entries, want 1:\n%s", got, utLogText(logs))
	}

	utWriteFile(t, path, garbage)
	s.check()
	keyIs("garbage", keyB)
	if got := logs.FilterLevelExact(zapcore.WarnLevel).Len(); got != 1 {
		t.Errorf("garbage: %d warnings, want 1:\n%s", got, utLogText(logs))
	}
	s.check() // unchanged garbage: not re-read, not logged again
	if got := logs.FilterLevelExact(zapcore.WarnLevel).Len(); got != 1 {
		t.Errorf("unchanged garbage: %d warnings, want still 1:\n%s", got, utLogText(logs))
	}

	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	s.check()
	keyIs("deleted", keyB)
	if got := logs.FilterLevelExact(zapcore.WarnLevel).Len(); got != 2 {
		t.Errorf("deleted: %d warnings, want 2:\n%s", got, utLogText(logs))
	}
	s.check()
	s.check()
	if got := logs.FilterLevelExact(zapcore.WarnLevel).Len(); got != 2 {
		t.Errorf("still deleted: %d warnings, want still 2 (logged once):\n%s", got, utLogText(logs))
	}

	utWriteFile(t, path, "endpoint=https://contoso.communication.azure.com/;accesskey="+keyC)
	s.check()
	keyIs("restored with a connection string", keyC)
	if cred, _ := s.Credential(); cred.Endpoint == nil || cred.Endpoint.Host != "contoso.communication.azure.com" {
		t.Errorf("restored with a connection string: Endpoint = %v", cred.Endpoint)
	}

	text := utLogText(logs)
	for _, secret := range []string{keyA, keyB, keyC, garbage, "GARBAGE"} {
		if strings.Contains(text, secret) {
			t.Errorf("logs contain key material or file content %q:\n%s", secret, text)
		}
	}
	for _, e := range logs.All() {
		if e.ContextMap()["path"] != path {
			t.Errorf("log entry %q does not name the path: %v", e.Message, e.ContextMap())
		}
	}
}

// utWatchers counts running KeyFileSource watcher goroutines.
func utWatchers() int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return bytes.Count(buf[:n], []byte("(*KeyFileSource).watch("))
		}
		buf = make([]byte, 2*len(buf))
	}
}

func utEventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestKeyFileSourceWatcherStopsWithContext(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "acs")
	keyA, _ := utNewKey(t)
	keyB, _ := utNewKey(t)
	keyC, _ := utNewKey(t)
	utWriteFile(t, path, keyA)

	before := utWatchers()
	ctx, cancel := utCaddyCtx(t)
	s := &KeyFileSource{Path: path, PollInterval: caddy.Duration(10 * time.Millisecond)}
	if err := s.Provision(ctx); err != nil {
		t.Fatalf("Provision: %v", err)
	}
	utEventually(t, "the watcher to start", func() bool { return utWatchers() == before+1 })

	// The watcher picks up a rotation by itself.
	wantB := utParsedKey(t, keyB)
	utWriteFile(t, path, keyB)
	utEventually(t, "the watcher to pick up the new key", func() bool {
		c, err := s.Credential()
		return err == nil && c.Key.Equal(wantB)
	})

	cancel()
	utEventually(t, "the watcher to stop", func() bool { return utWatchers() == before })

	// No further reads: a rotation after cancellation is not picked up.
	utWriteFile(t, path, keyC)
	time.Sleep(20 * time.Duration(s.PollInterval))
	if c, err := s.Credential(); err != nil || !c.Key.Equal(wantB) {
		t.Errorf("after cancel: key changed (err %v); the watcher kept reading the file", err)
	}
}

func TestStaticSourcesPlaceholders(t *testing.T) {
	keyB64, _ := utNewKey(t)
	want := utParsedKey(t, keyB64)
	connStr := "endpoint=https://contoso.communication.azure.com/;accesskey=" + keyB64
	t.Setenv("UT_ACS_CONNECTION_STRING", connStr)
	t.Setenv("UT_ACS_ACCESS_KEY", keyB64)
	ctx, _ := utCaddyCtx(t)

	t.Run("connection_string", func(t *testing.T) {
		s := &ConnectionStringSource{ConnectionString: "{env.UT_ACS_CONNECTION_STRING}"}
		if err := s.Provision(ctx); err != nil {
			t.Fatalf("Provision: %v", err)
		}
		cred, err := s.Credential()
		if err != nil {
			t.Fatal(err)
		}
		if !cred.Key.Equal(want) {
			t.Error("wrong key")
		}
		if cred.Endpoint == nil || cred.Endpoint.String() != "https://contoso.communication.azure.com" {
			t.Errorf("Endpoint = %v", cred.Endpoint)
		}
		if s.ConnectionString != "{env.UT_ACS_CONNECTION_STRING}" {
			t.Errorf("field was overwritten after Provision")
		}
		out, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		if string(out) != `{"connection_string":"{env.UT_ACS_CONNECTION_STRING}"}` {
			t.Errorf("JSON after Provision: %s", out)
		}
		if strings.Contains(string(out), keyB64) {
			t.Errorf("JSON after Provision contains the key: %s", out)
		}
	})

	t.Run("connection_string with a placeholder inside", func(t *testing.T) {
		s := &ConnectionStringSource{ConnectionString: "endpoint=https://contoso.communication.azure.com/;accesskey={env.UT_ACS_ACCESS_KEY}"}
		if err := s.Provision(ctx); err != nil {
			t.Fatalf("Provision: %v", err)
		}
		if cred, _ := s.Credential(); !cred.Key.Equal(want) {
			t.Error("wrong key")
		}
		out, _ := json.Marshal(s)
		if strings.Contains(string(out), keyB64) || !strings.Contains(string(out), "{env.UT_ACS_ACCESS_KEY}") {
			t.Errorf("JSON after Provision: %s", out)
		}
	})

	t.Run("access_key", func(t *testing.T) {
		s := &AccessKeySource{AccessKey: "{env.UT_ACS_ACCESS_KEY}"}
		if err := s.Provision(ctx); err != nil {
			t.Fatalf("Provision: %v", err)
		}
		cred, err := s.Credential()
		if err != nil {
			t.Fatal(err)
		}
		if !cred.Key.Equal(want) {
			t.Error("wrong key")
		}
		if cred.Endpoint != nil {
			t.Errorf("bare key: Endpoint = %v, want nil", cred.Endpoint)
		}
		out, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		if string(out) != `{"access_key":"{env.UT_ACS_ACCESS_KEY}"}` {
			t.Errorf("JSON after Provision: %s", out)
		}
	})

	t.Run("file placeholder", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "cs")
		if err := os.WriteFile(path, []byte(connStr+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		s := &ConnectionStringSource{ConnectionString: "{file." + path + "}"}
		if err := s.Provision(ctx); err != nil {
			t.Fatalf("Provision: %v", err)
		}
		if cred, _ := s.Credential(); !cred.Key.Equal(want) {
			t.Error("wrong key")
		}
	})
}

func TestStaticSourcesErrors(t *testing.T) {
	keyB64, _ := utNewKey(t)
	const secret = "S3CRET*not*base64"
	t.Setenv("UT_ACS_BAD_CONNECTION_STRING", "endpoint=https://contoso.communication.azure.com/;accesskey="+secret)
	t.Setenv("UT_ACS_BAD_ACCESS_KEY", secret)
	t.Setenv("UT_ACS_EMPTY", "")
	ctx, _ := utCaddyCtx(t)

	for _, tc := range []struct {
		name    string
		src     interface{ Provision(caddy.Context) error }
		wantIn  string
		wantNot []string
	}{
		{"connection_string unset env", &ConnectionStringSource{ConnectionString: "{env.UT_ACS_SURELY_UNSET_1}"}, "{env.UT_ACS_SURELY_UNSET_1}", nil},
		{"connection_string empty env", &ConnectionStringSource{ConnectionString: "{env.UT_ACS_EMPTY}"}, "{env.UT_ACS_EMPTY}", nil},
		{"access_key unset env", &AccessKeySource{AccessKey: "{env.UT_ACS_SURELY_UNSET_2}"}, "{env.UT_ACS_SURELY_UNSET_2}", nil},
		{"access_key unknown placeholder", &AccessKeySource{AccessKey: "{nope.UT_ACS}"}, "{nope.UT_ACS}", nil},
		{"connection_string empty", &ConnectionStringSource{}, "empty", nil},
		{"access_key empty", &AccessKeySource{}, "empty", nil},
		{"connection_string bad key from env", &ConnectionStringSource{ConnectionString: "{env.UT_ACS_BAD_CONNECTION_STRING}"}, "accesskey", []string{secret, "S3CRET"}},
		{"connection_string bad key literal", &ConnectionStringSource{ConnectionString: "endpoint=https://contoso.communication.azure.com/;accesskey=" + secret}, "accesskey", []string{secret, "S3CRET"}},
		{"connection_string no endpoint", &ConnectionStringSource{ConnectionString: "accesskey=" + keyB64}, "endpoint", []string{keyB64}},
		{"connection_string bad endpoint", &ConnectionStringSource{ConnectionString: "endpoint=ftp://contoso;accesskey=" + keyB64}, "endpoint", []string{keyB64}},
		{"connection_string is a bare key", &ConnectionStringSource{ConnectionString: keyB64}, "connection_string", []string{keyB64}},
		{"access_key bad from env", &AccessKeySource{AccessKey: "{env.UT_ACS_BAD_ACCESS_KEY}"}, "access_key", []string{secret, "S3CRET"}},
		{"access_key bad literal", &AccessKeySource{AccessKey: secret}, "access_key", []string{secret, "S3CRET"}},
		{"access_key is a connection string", &AccessKeySource{AccessKey: "endpoint=https://contoso.communication.azure.com/;accesskey=" + keyB64}, "access_key", []string{keyB64}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.src.Provision(ctx)
			if err == nil {
				t.Fatal("Provision succeeded")
			}
			if !strings.Contains(err.Error(), tc.wantIn) {
				t.Errorf("error does not mention %q: %v", tc.wantIn, err)
			}
			for _, s := range tc.wantNot {
				if strings.Contains(err.Error(), s) {
					t.Errorf("error contains the value %q: %v", s, err)
				}
			}
		})
	}
}

func TestKeyFileSourceRefresh(t *testing.T) {
	path := filepath.Join(t.TempDir(), "acs")
	keyA, _ := utNewKey(t)
	keyB, _ := utNewKey(t)
	utWriteFile(t, path, keyA)
	ctx, _ := utCaddyCtx(t)
	s := &KeyFileSource{Path: path, PollInterval: caddy.Duration(time.Hour)}
	if err := s.Provision(ctx); err != nil {
		t.Fatalf("Provision: %v", err)
	}
	s.logger = zap.NewNop()
	a, _ := s.Credential()

	if c, changed := s.Refresh(ctx, a.Key); changed || c.Key != a.Key {
		t.Errorf("unchanged file: Refresh = changed %v, same key %v", changed, c.Key == a.Key)
	}

	// A rotation the watcher has not seen yet (hour-long poll) is found on demand.
	utWriteFile(t, path, keyB)
	c, changed := s.Refresh(ctx, a.Key)
	if !changed || !c.Key.Equal(utParsedKey(t, keyB)) {
		t.Fatalf("rotated file: Refresh = changed %v, new key %v", changed, c.Key.Equal(utParsedKey(t, keyB)))
	}
	if cur, _ := s.Credential(); cur.Key != c.Key {
		t.Error("Refresh returned a key that is not the one in force")
	}
	// A request still signed with the old key learns of the new one at once.
	if c2, changed := s.Refresh(ctx, a.Key); !changed || c2.Key != c.Key {
		t.Error("second Refresh with the old key: want the key in force, changed")
	}
	// Garbage does not count as a change.
	utWriteFile(t, path, "not a key!")
	if c3, changed := s.Refresh(ctx, c.Key); changed || c3.Key != c.Key {
		t.Error("garbage file: Refresh reported a change")
	}
}
