package caddyfile_test

import (
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"
)

// transportSite wraps the lines of a "transport acs_hmac" block in a site;
// the first line of the block is line 4 of the Caddyfile.
func transportSite(lines ...string) string {
	var b strings.Builder
	b.WriteString(":8080\nreverse_proxy https://contoso.communication.azure.com {\n\ttransport acs_hmac {\n")
	for _, l := range lines {
		b.WriteString("\t\t" + l + "\n")
	}
	b.WriteString("\t}\n}\n")
	return b.String()
}

// verifySite wraps the lines of an "acs_hmac_verify" block in a site; the
// first line of the block is line 4 of the Caddyfile.
func verifySite(lines ...string) string {
	var b strings.Builder
	b.WriteString(":8081\n\nacs_hmac_verify {\n")
	for _, l := range lines {
		b.WriteString("\t" + l + "\n")
	}
	b.WriteString("}\nrespond 202\n")
	return b.String()
}

func TestCaddyfileErrors(t *testing.T) {
	const (
		key = "access_key c2VjcmV0LWtleS1mb3ItdGVzdHM="
		cs  = `connection_string "endpoint=https://contoso.communication.azure.com/;accesskey=c2VjcmV0LWtleS1mb3ItdGVzdHM="`
	)
	tests := []struct {
		name      string
		caddyfile string
		want      []string // substrings of the error
		notWant   []string // substrings the error must not have
		line      int      // the line Caddy reports: "Caddyfile:<line>"
	}{
		// unknown subdirectives
		{
			name:      "transport: unknown subdirective",
			caddyfile: transportSite(key, "bogus_thing 1"),
			want:      []string{"unrecognized subdirective", "bogus_thing"},
			line:      5,
		},
		{
			name:      "transport: unknown subdirective before the key source",
			caddyfile: transportSite("dial_timeout 5s", "bogus_thing 1", key),
			want:      []string{"unrecognized subdirective", "bogus_thing"},
			line:      5,
		},
		{
			name:      "verify: unknown subdirective",
			caddyfile: verifySite(key, "bogus_thing 1"),
			want:      []string{"acs_hmac_verify", "unrecognized subdirective", "bogus_thing"},
			line:      5,
		},
		{
			name:      "verify: http transport subdirective is not ours",
			caddyfile: verifySite(key, "dial_timeout 5s"),
			want:      []string{"unrecognized subdirective", "dial_timeout"},
			line:      5,
		},
		{
			name:      "transport: bad http transport subdirective value",
			caddyfile: transportSite(key, "dial_timeout nope"),
			want:      []string{"nope"},
			line:      5,
		},

		// key sources: exactly one
		{
			name:      "transport: two key sources",
			caddyfile: transportSite(key, cs),
			want:      []string{"only one key source", "access_key", "connection_string"},
			notWant:   []string{"c2VjcmV0"},
			line:      5,
		},
		{
			name:      "transport: two key sources with http subdirectives between",
			caddyfile: transportSite("key_file /run/secrets/acs", "dial_timeout 5s", key),
			want:      []string{"only one key source", "key_file", "access_key"},
			notWant:   []string{"c2VjcmV0"},
			line:      6,
		},
		{
			name:      "transport: the same key source twice",
			caddyfile: transportSite(key, key),
			want:      []string{"only one key source", "access_key"},
			notWant:   []string{"c2VjcmV0"},
			line:      5,
		},
		{
			name:      "verify: two key sources",
			caddyfile: verifySite(cs, key),
			want:      []string{"only one key source", "access_key", "connection_string"},
			notWant:   []string{"c2VjcmV0"},
			line:      5,
		},
		{
			name:      "transport: no key source",
			caddyfile: transportSite("dial_timeout 5s", "max_body_size 1MiB"),
			want:      []string{"acs_hmac", "key source is required", "connection_string", "access_key", "key_file"},
			line:      6,
		},
		{
			name:      "transport: no block at all",
			caddyfile: ":8080\n\nreverse_proxy https://contoso.communication.azure.com {\n\ttransport acs_hmac\n}\n",
			want:      []string{"acs_hmac", "key source is required"},
			line:      4,
		},
		{
			name:      "verify: no key source",
			caddyfile: verifySite("max_skew 5m"),
			want:      []string{"acs_hmac_verify", "key source is required"},
			line:      5,
		},
		{
			name:      "verify: no block at all",
			caddyfile: ":8081\n\nacs_hmac_verify\nrespond 202\n",
			want:      []string{"acs_hmac_verify", "key source is required"},
			line:      3,
		},

		// arguments of key sources
		{
			name:      "transport: access_key without argument",
			caddyfile: transportSite("access_key"),
			want:      []string{"access_key", "argument"},
			line:      4,
		},
		{
			name:      "verify: access_key without argument",
			caddyfile: verifySite("access_key"),
			want:      []string{"access_key", "argument"},
			line:      4,
		},
		{
			name:      "transport: access_key with two arguments",
			caddyfile: transportSite("access_key a b"),
			want:      []string{"access_key", "exactly one argument"},
			line:      4,
		},
		{
			name:      "verify: access_key with two arguments",
			caddyfile: verifySite("access_key c2VjcmV0 c2VjcmV0LWtleS1mb3ItdGVzdHM="),
			want:      []string{"access_key", "exactly one argument"},
			notWant:   []string{"c2VjcmV0"},
			line:      4,
		},
		{
			name:      "transport: connection_string without argument",
			caddyfile: transportSite("connection_string"),
			want:      []string{"connection_string", "argument"},
			line:      4,
		},
		{
			name:      "transport: key_file with two arguments",
			caddyfile: transportSite("key_file /run/secrets/a /run/secrets/b"),
			want:      []string{"key_file", "exactly one argument"},
			line:      4,
		},
		{
			name:      "verify: key source with a block",
			caddyfile: verifySite("access_key c2VjcmV0LWtleS1mb3ItdGVzdHM= {", "\tsomething", "}"),
			want:      []string{"access_key", "takes no block"},
			notWant:   []string{"c2VjcmV0"},
			line:      5, // Caddy reports the line of the token after the brace
		},
		{
			name:      "transport: argument after the transport name",
			caddyfile: ":8080\n\nreverse_proxy https://contoso.communication.azure.com {\n\ttransport acs_hmac extra {\n\t\t" + key + "\n\t}\n}\n",
			want:      []string{"extra"},
			line:      4,
		},
		{
			name:      "verify: argument that is not a matcher",
			caddyfile: ":8081\n\nacs_hmac_verify extra {\n\t" + key + "\n}\nrespond 202\n",
			want:      []string{"extra"},
			line:      3,
		},

		// max_body_size
		{
			name:      "transport: max_body_size not a size",
			caddyfile: transportSite(key, "max_body_size lots"),
			want:      []string{"max_body_size", `"lots"`},
			line:      5,
		},
		{
			name:      "verify: max_body_size not a size",
			caddyfile: verifySite(key, "max_body_size lots"),
			want:      []string{"max_body_size", `"lots"`},
			line:      5,
		},
		{
			name:      "transport: max_body_size zero",
			caddyfile: transportSite(key, "max_body_size 0"),
			want:      []string{"max_body_size", "positive"},
			line:      5,
		},
		{
			name:      "verify: max_body_size zero",
			caddyfile: verifySite(key, "max_body_size 0B"),
			want:      []string{"max_body_size", "positive"},
			line:      5,
		},
		{
			name:      "transport: max_body_size negative",
			caddyfile: transportSite(key, "max_body_size -1MiB"),
			want:      []string{"max_body_size", "-1MiB"},
			line:      5,
		},
		{
			name:      "transport: max_body_size absurdly large",
			caddyfile: transportSite(key, "max_body_size 2TiB"),
			want:      []string{"max_body_size", "2TiB"},
			line:      5,
		},
		{
			name:      "transport: max_body_size without argument",
			caddyfile: transportSite(key, "max_body_size"),
			want:      []string{"max_body_size", "argument"},
			line:      5,
		},
		{
			name:      "verify: max_body_size with two arguments",
			caddyfile: verifySite(key, "max_body_size 1 MiB"),
			want:      []string{"max_body_size", "exactly one argument"},
			line:      5,
		},

		// max_skew
		{
			name:      "verify: max_skew not a duration",
			caddyfile: verifySite(key, "max_skew nope"),
			want:      []string{"max_skew", `"nope"`},
			line:      5,
		},
		{
			name:      "verify: max_skew zero",
			caddyfile: verifySite(key, "max_skew 0s"),
			want:      []string{"max_skew", `"0s"`},
			line:      5,
		},
		{
			name:      "verify: max_skew negative",
			caddyfile: verifySite(key, "max_skew -5m"),
			want:      []string{"max_skew", `"-5m"`},
			line:      5,
		},
		{
			name:      "verify: max_skew without argument",
			caddyfile: verifySite(key, "max_skew"),
			want:      []string{"max_skew", "duration"},
			line:      5,
		},
		{
			name:      "transport: max_skew is the verifier's only",
			caddyfile: transportSite(key, "max_skew 5m"),
			want:      []string{"unrecognized subdirective", "max_skew"},
			line:      5,
		},

		// key_vault block
		{
			name:      "transport: key_vault without a URL",
			caddyfile: transportSite("key_vault"),
			want:      []string{"key_vault", "wrong argument count"},
			line:      4,
		},
		{
			name:      "transport: key_vault unknown credential",
			caddyfile: transportSite("key_vault https://contoso-kv.vault.azure.net/secrets/acs {", "\tcredential magic", "}"),
			want:      []string{"unknown credential", "magic", "managed_identity"},
			line:      5,
		},
		{
			name:      "transport: key_vault client_secret missing arguments",
			caddyfile: transportSite("key_vault https://contoso-kv.vault.azure.net/secrets/acs {", "\tcredential client_secret tenant", "}"),
			want:      []string{"client_secret", "<tenant id> <client id> <client secret>"},
			line:      5,
		},
		{
			name:      "transport: key_vault managed_identity with two IDs",
			caddyfile: transportSite("key_vault https://contoso-kv.vault.azure.net/secrets/acs {", "\tcredential managed_identity a b", "}"),
			want:      []string{"managed_identity", "at most one"},
			line:      5,
		},
		{
			name:      "transport: key_vault credential twice",
			caddyfile: transportSite("key_vault https://contoso-kv.vault.azure.net/secrets/acs {", "\tcredential default", "\tcredential azure_cli", "}"),
			want:      []string{"credential given twice"},
			line:      6,
		},
		{
			name:      "transport: key_vault bad refresh",
			caddyfile: transportSite("key_vault https://contoso-kv.vault.azure.net/secrets/acs {", "\trefresh soon", "}"),
			want:      []string{"refresh", "soon"},
			line:      5,
		},
		{
			name:      "verify: key_vault unknown subdirective",
			caddyfile: verifySite("key_vault https://contoso-kv.vault.azure.net/secrets/acs {", "\trotate_now", "}"),
			want:      []string{"key_vault", "unrecognized subdirective", "rotate_now"},
			line:      5,
		},
		{
			name:      "transport: key_vault and access_key",
			caddyfile: transportSite("key_vault https://contoso-kv.vault.azure.net/secrets/acs", key),
			want:      []string{"only one key source", "key_vault", "access_key"},
			line:      5,
		},
	}
	adapter := caddyconfig.GetAdapter("caddyfile")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := adapter.Adapt([]byte(tt.caddyfile), nil)
			if err == nil {
				t.Fatalf("adapting succeeded; want an error\n%s", tt.caddyfile)
			}
			msg := err.Error()
			t.Logf("error: %s", msg)
			for _, w := range tt.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q does not contain %q", msg, w)
				}
			}
			for _, w := range tt.notWant {
				if strings.Contains(msg, w) {
					t.Errorf("error %q contains %q", msg, w)
				}
			}
			loc := "Caddyfile:" + itoa(tt.line)
			if !strings.Contains(msg, "at "+loc) {
				t.Errorf("error %q does not give the location %s\nCaddyfile:\n%s", msg, loc, numbered(tt.caddyfile))
			}
			if n := strings.Count(msg, ", at Caddyfile:"); n != 1 {
				t.Errorf("error %q gives the location %d times, want once", msg, n)
			}
		})
	}
}

// The file name Caddy reports comes from the adapter's "filename" option.
func TestCaddyfileErrorNamesTheFile(t *testing.T) {
	_, _, err := caddyconfig.GetAdapter("caddyfile").Adapt(
		[]byte(transportSite("access_key a", "bogus_thing 1")),
		map[string]any{"filename": "/etc/caddy/Caddyfile.acs"})
	if err == nil {
		t.Fatal("adapting succeeded; want an error")
	}
	if !strings.Contains(err.Error(), "/etc/caddy/Caddyfile.acs:5") {
		t.Errorf("error %q does not name /etc/caddy/Caddyfile.acs:5", err)
	}
}

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	var b []byte
	for ; n > 0; n /= 10 {
		b = append([]byte{byte('0' + n%10)}, b...)
	}
	return string(b)
}

func numbered(s string) string {
	var b strings.Builder
	for i, l := range strings.Split(strings.TrimSuffix(s, "\n"), "\n") {
		b.WriteString(itoa(i+1) + "\t" + l + "\n")
	}
	return b.String()
}
