package caddyfile_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
)

// Provisioning errors, through caddy.Load with a JSON config. caddy.Load
// works on Caddy's global state: these tests must not run in parallel.

const (
	// goodKey is base64 for a test key; badKey is not base64 at all.
	goodKey = "c2VjcmV0LWtleS1mb3ItdGVzdHM="
	badKey  = "not*base64*key!!"
	// endpoint of the test resource
	testEndpoint = "https://contoso.communication.azure.com/"
)

// load runs caddy.Load on a config whose only server listens on 127.0.0.1:0
// with handler as its only handler, and stops Caddy when the test ends.
func load(t *testing.T, handler map[string]any) error {
	t.Helper()
	cfg := map[string]any{
		"admin": map[string]any{"disabled": true},
		"apps": map[string]any{
			"http": map[string]any{
				"servers": map[string]any{
					"srv0": map[string]any{
						"listen": []string{"127.0.0.1:0"},
						"routes": []any{
							map[string]any{"handle": []any{handler}},
						},
					},
				},
			},
		},
	}
	b, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = caddy.Stop() })
	return caddy.Load(b, true)
}

// transportHandler is a reverse_proxy whose acs_hmac transport has the given
// key source (nil for none).
func transportHandler(keySource map[string]any) map[string]any {
	tr := map[string]any{"protocol": "acs_hmac"}
	if keySource != nil {
		tr["key_source"] = keySource
	}
	return map[string]any{
		"handler":   "reverse_proxy",
		"transport": tr,
		"upstreams": []any{map[string]any{"dial": "127.0.0.1:9"}},
	}
}

// verifyHandler is an acs_hmac_verify handler with the given key source (nil
// for none).
func verifyHandler(keySource map[string]any) map[string]any {
	h := map[string]any{"handler": "acs_hmac_verify"}
	if keySource != nil {
		h["key_source"] = keySource
	}
	return h
}

var handlerKinds = []struct {
	name string
	make func(map[string]any) map[string]any
}{
	{"transport", transportHandler},
	{"verify", verifyHandler},
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// unsetEnv makes sure name is unset for the test, and restores it after.
func unsetEnv(t *testing.T, name string) {
	t.Helper()
	t.Setenv(name, "")
	if err := os.Unsetenv(name); err != nil {
		t.Fatal(err)
	}
}

func TestProvisionErrors(t *testing.T) {
	missingFile := filepath.Join(t.TempDir(), "no-such-dir", "acs-key")
	garbage := "this-is-garbage*not-a-key~~"
	garbageFile := writeFile(t, "garbage", garbage+"\n")
	badCSFile := writeFile(t, "bad-cs", "endpoint="+testEndpoint+";accesskey="+badKey+"\n")
	noKeyCSFile := writeFile(t, "no-key-cs", "endpoint="+testEndpoint+"\n")
	emptyFile := writeFile(t, "empty", "")

	const unsetVar = "ACS_HMAC_TEST_SURELY_UNSET_VAR"
	const badVar = "ACS_HMAC_TEST_BAD_KEY_VAR"

	tests := []struct {
		name      string
		keySource map[string]any // nil: none
		setup     func(t *testing.T)
		want      []string
		notWant   []string
	}{
		{
			name: "no key source",
			want: []string{"key source"},
		},
		{
			name:      "unknown key source module",
			keySource: map[string]any{"source": "carrier_pigeon"},
			want:      []string{"carrier_pigeon"},
		},
		{
			name:      "access_key not base64",
			keySource: map[string]any{"source": "access_key", "access_key": badKey},
			want:      []string{"access_key", "base64"},
			notWant:   []string{badKey, "not*base64"},
		},
		{
			name:      "access_key empty",
			keySource: map[string]any{"source": "access_key"},
			want:      []string{"access_key", "empty"},
		},
		{
			name:      "access_key placeholder of an unset variable",
			keySource: map[string]any{"source": "access_key", "access_key": "{env." + unsetVar + "}"},
			setup:     func(t *testing.T) { unsetEnv(t, unsetVar) },
			want:      []string{"access_key", "{env." + unsetVar + "}"},
		},
		{
			name:      "access_key placeholder holding garbage",
			keySource: map[string]any{"source": "access_key", "access_key": "{env." + badVar + "}"},
			setup:     func(t *testing.T) { t.Setenv(badVar, badKey) },
			want:      []string{"access_key", "base64"},
			notWant:   []string{badKey, "not*base64"},
		},
		{
			name:      "connection_string without accesskey",
			keySource: map[string]any{"source": "connection_string", "connection_string": "endpoint=" + testEndpoint},
			want:      []string{"connection_string", "accesskey"},
		},
		{
			name:      "connection_string without endpoint",
			keySource: map[string]any{"source": "connection_string", "connection_string": "accesskey=" + goodKey},
			want:      []string{"connection_string", "endpoint"},
			notWant:   []string{goodKey},
		},
		{
			name:      "connection_string with an invalid accesskey",
			keySource: map[string]any{"source": "connection_string", "connection_string": "endpoint=" + testEndpoint + ";accesskey=" + badKey},
			want:      []string{"connection_string", "accesskey"},
			notWant:   []string{badKey, "not*base64"},
		},
		{
			name:      "connection_string with a bad endpoint",
			keySource: map[string]any{"source": "connection_string", "connection_string": "endpoint=ftp://contoso.example/;accesskey=" + goodKey},
			want:      []string{"connection_string", "endpoint"},
			notWant:   []string{goodKey},
		},
		{
			name:      "connection_string placeholder of an unset variable",
			keySource: map[string]any{"source": "connection_string", "connection_string": "{env." + unsetVar + "}"},
			setup:     func(t *testing.T) { unsetEnv(t, unsetVar) },
			want:      []string{"connection_string", "{env." + unsetVar + "}"},
		},
		{
			name:      "connection_string accesskey placeholder of an unset variable",
			keySource: map[string]any{"source": "connection_string", "connection_string": "endpoint=" + testEndpoint + ";accesskey={env." + unsetVar + "}"},
			setup:     func(t *testing.T) { unsetEnv(t, unsetVar) },
			want:      []string{"connection_string", "{env." + unsetVar + "}"},
		},
		{
			name:      "connection_string accesskey placeholder holding garbage",
			keySource: map[string]any{"source": "connection_string", "connection_string": "endpoint=" + testEndpoint + ";accesskey={env." + badVar + "}"},
			setup:     func(t *testing.T) { t.Setenv(badVar, badKey) },
			want:      []string{"connection_string", "accesskey"},
			notWant:   []string{badKey, "not*base64"},
		},
		{
			name:      "connection_string file placeholder of a missing file",
			keySource: map[string]any{"source": "connection_string", "connection_string": "{file." + missingFile + "}"},
			want:      []string{"connection_string", "{file." + missingFile + "}"},
		},
		{
			name:      "key_file that does not exist",
			keySource: map[string]any{"source": "key_file", "path": missingFile},
			want:      []string{"key_file", missingFile},
		},
		{
			name:      "key_file holding garbage",
			keySource: map[string]any{"source": "key_file", "path": garbageFile},
			want:      []string{"key_file", garbageFile},
			notWant:   []string{garbage, "garbage*"},
		},
		{
			name:      "key_file holding a connection string with a bad accesskey",
			keySource: map[string]any{"source": "key_file", "path": badCSFile},
			want:      []string{"key_file", badCSFile, "accesskey"},
			notWant:   []string{badKey, "not*base64"},
		},
		{
			name:      "key_file holding a connection string without accesskey",
			keySource: map[string]any{"source": "key_file", "path": noKeyCSFile},
			want:      []string{"key_file", noKeyCSFile, "accesskey"},
		},
		{
			name:      "key_file that is empty",
			keySource: map[string]any{"source": "key_file", "path": emptyFile},
			want:      []string{"key_file", emptyFile},
		},
		{
			name:      "key_file that is a directory",
			keySource: map[string]any{"source": "key_file", "path": filepath.Dir(garbageFile)},
			want:      []string{"key_file", filepath.Dir(garbageFile)},
		},
		{
			name:      "key_file without path",
			keySource: map[string]any{"source": "key_file"},
			want:      []string{"key_file"},
		},
		{
			name:      "key_file path placeholder of an unset variable",
			keySource: map[string]any{"source": "key_file", "path": "{env." + unsetVar + "}/acs"},
			setup:     func(t *testing.T) { unsetEnv(t, unsetVar) },
			want:      []string{"key_file", "{env." + unsetVar + "}"},
		},
	}
	for _, kind := range handlerKinds {
		for _, tt := range tests {
			t.Run(kind.name+"/"+tt.name, func(t *testing.T) {
				if tt.setup != nil {
					tt.setup(t)
				}
				err := load(t, kind.make(tt.keySource))
				if err == nil {
					t.Fatal("caddy.Load succeeded; want a provisioning error")
				}
				msg := err.Error()
				t.Logf("error: %s", msg)
				for _, w := range tt.want {
					if !strings.Contains(msg, w) {
						t.Errorf("error does not contain %q:\n%s", w, msg)
					}
				}
				for _, w := range tt.notWant {
					if strings.Contains(msg, w) {
						t.Errorf("error contains %q:\n%s", w, msg)
					}
				}
			})
		}
	}
}

func TestProvisionBadSizes(t *testing.T) {
	ks := map[string]any{"source": "access_key", "access_key": goodKey}
	tests := []struct {
		name    string
		handler map[string]any
		want    string
	}{
		{
			name: "transport: negative max_body_size",
			handler: func() map[string]any {
				h := transportHandler(ks)
				h["transport"].(map[string]any)["max_body_size"] = -1
				return h
			}(),
			want: "max_body_size",
		},
		{
			name: "verify: negative max_body_size",
			handler: func() map[string]any {
				h := verifyHandler(ks)
				h["max_body_size"] = -1
				return h
			}(),
			want: "max_body_size",
		},
		{
			name: "verify: negative max_skew",
			handler: func() map[string]any {
				h := verifyHandler(ks)
				h["max_skew"] = "-5m"
				return h
			}(),
			want: "max_skew",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := load(t, tt.handler)
			if err == nil {
				t.Fatal("caddy.Load succeeded; want a provisioning error")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error does not contain %q:\n%v", tt.want, err)
			}
		})
	}
}

// The same configs load when the key material is good, so the errors above
// come from the key, not from the rest of the config.
func TestProvisionGoodKeySources(t *testing.T) {
	keyFile := writeFile(t, "key", "  "+goodKey+"\n")
	csFile := writeFile(t, "cs", "endpoint="+testEndpoint+";accesskey="+goodKey+"\n")
	const keyVar = "ACS_HMAC_TEST_GOOD_KEY_VAR"
	const dirVar = "ACS_HMAC_TEST_KEY_DIR_VAR"
	tests := []struct {
		name      string
		keySource map[string]any
		setup     func(t *testing.T)
	}{
		{name: "access_key", keySource: map[string]any{"source": "access_key", "access_key": goodKey}},
		{
			name:      "access_key placeholder",
			keySource: map[string]any{"source": "access_key", "access_key": "{env." + keyVar + "}"},
			setup:     func(t *testing.T) { t.Setenv(keyVar, goodKey) },
		},
		{
			name:      "connection_string",
			keySource: map[string]any{"source": "connection_string", "connection_string": "endpoint=" + testEndpoint + ";accesskey=" + goodKey},
		},
		{
			name:      "connection_string with accesskey placeholder",
			keySource: map[string]any{"source": "connection_string", "connection_string": "endpoint=" + testEndpoint + ";accesskey={env." + keyVar + "}"},
			setup:     func(t *testing.T) { t.Setenv(keyVar, goodKey) },
		},
		{
			name:      "connection_string from a file placeholder",
			keySource: map[string]any{"source": "connection_string", "connection_string": "{file." + csFile + "}"},
		},
		{name: "key_file with a bare key", keySource: map[string]any{"source": "key_file", "path": keyFile}},
		{name: "key_file with a connection string", keySource: map[string]any{"source": "key_file", "path": csFile}},
		{
			name:      "key_file path placeholder",
			keySource: map[string]any{"source": "key_file", "path": "{env." + dirVar + "}/" + filepath.Base(keyFile)},
			setup:     func(t *testing.T) { t.Setenv(dirVar, filepath.Dir(keyFile)) },
		},
	}
	for _, kind := range handlerKinds {
		for _, tt := range tests {
			t.Run(kind.name+"/"+tt.name, func(t *testing.T) {
				if tt.setup != nil {
					tt.setup(t)
				}
				if err := load(t, kind.make(tt.keySource)); err != nil {
					t.Fatalf("caddy.Load: %v", err)
				}
			})
		}
	}
}

// What the Caddyfile adapter produces provisions: the http transport's
// subdirectives decode into the embedded transport, and the placeholders
// expand at provisioning, not before.
func TestAdaptedCaddyfileProvisions(t *testing.T) {
	keyFile := writeFile(t, "key", goodKey+"\n")
	caddyfile := `{
	admin off
}

http://127.0.0.1:0 {
	reverse_proxy https://contoso.communication.azure.com {
		transport acs_hmac {
			dial_timeout 5s
			connection_string "endpoint=https://contoso.communication.azure.com/;accesskey={env.ACS_HMAC_TEST_RT_KEY}"
			keepalive 2m
			max_body_size 50MiB
			tls_server_name x.example
			versions 1.1
		}
	}
}

http://localhost:0 {
	acs_hmac_verify {
		key_file ` + keyFile + `
		max_skew 5m
		max_body_size 1MiB
	}
	respond 202
}
`
	cfgJSON, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(caddyfile), nil)
	if err != nil {
		t.Fatalf("adapting: %v", err)
	}
	if strings.Contains(string(cfgJSON), goodKey) {
		t.Fatalf("adapted JSON holds the key:\n%s", cfgJSON)
	}
	t.Cleanup(func() { _ = caddy.Stop() })

	t.Run("variable unset", func(t *testing.T) {
		unsetEnv(t, "ACS_HMAC_TEST_RT_KEY")
		err := caddy.Load(cfgJSON, true)
		if err == nil {
			t.Fatal("caddy.Load succeeded with the key variable unset")
		}
		if !strings.Contains(err.Error(), "{env.ACS_HMAC_TEST_RT_KEY}") {
			t.Errorf("error does not name the placeholder: %v", err)
		}
	})
	t.Run("variable set", func(t *testing.T) {
		t.Setenv("ACS_HMAC_TEST_RT_KEY", goodKey)
		if err := caddy.Load(cfgJSON, true); err != nil {
			t.Fatalf("caddy.Load: %v", err)
		}
	})
}
