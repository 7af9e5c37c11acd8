package caddyfile_test

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"
)

// The acs_hmac transport block accepts every subdirective of the standard
// http transport. These tests adapt the same subdirectives once under
// "transport http" and once under "transport acs_hmac" (with a key source and
// max_body_size mixed in at various places) and require the same transport
// JSON, apart from the acs_hmac-only fields.

// transportJSON adapts a Caddyfile whose only site is ":8080" with one
// reverse_proxy and returns that reverse_proxy's transport object.
func transportJSON(t *testing.T, caddyfile string) map[string]any {
	t.Helper()
	out, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(caddyfile), nil)
	if err != nil {
		t.Fatalf("adapting:\n%s\nerror: %v", caddyfile, err)
	}
	var cfg struct {
		Apps struct {
			HTTP struct {
				Servers map[string]struct {
					Routes []struct {
						Handle []map[string]any `json:"handle"`
					} `json:"routes"`
				} `json:"servers"`
			} `json:"http"`
		} `json:"apps"`
	}
	if err := json.Unmarshal(out, &cfg); err != nil {
		t.Fatalf("decoding adapted JSON: %v\n%s", err, out)
	}
	srv, ok := cfg.Apps.HTTP.Servers["srv0"]
	if !ok || len(srv.Routes) != 1 || len(srv.Routes[0].Handle) != 1 {
		t.Fatalf("unexpected shape of adapted config (want one route with one handler):\n%s", out)
	}
	h := srv.Routes[0].Handle[0]
	if h["handler"] != "reverse_proxy" {
		t.Fatalf("handler = %v, want reverse_proxy:\n%s", h["handler"], out)
	}
	tr, _ := h["transport"].(map[string]any)
	if tr == nil {
		tr = map[string]any{} // the default http transport is omitted
	}
	return tr
}

func TestTransportAcceptsHTTPTransportSubdirectives(t *testing.T) {
	const key = "access_key {env.ACS_ACCESS_KEY}"
	const size = "max_body_size 8MiB"
	tests := []struct {
		name     string
		upstream string
		// acs is the acs_hmac block body; the http block body is the same
		// without the lines that start with key or size.
		acs []string
	}{
		{
			name:     "ours first",
			upstream: "https://contoso.communication.azure.com",
			acs:      []string{key, size, "dial_timeout 5s", "read_timeout 30s", "keepalive 2m", "tls_server_name x.example", "versions 1.1"},
		},
		{
			name:     "ours last",
			upstream: "https://contoso.communication.azure.com",
			acs:      []string{"dial_timeout 5s", "read_timeout 30s", "keepalive 2m", "tls_server_name x.example", "versions 1.1", size, key},
		},
		{
			name:     "ours in the middle",
			upstream: "https://contoso.communication.azure.com",
			acs:      []string{"dial_timeout 5s", "read_timeout 30s", key, "keepalive 2m", size, "tls_server_name x.example", "versions 1.1"},
		},
		{
			name:     "only ours",
			upstream: "https://contoso.communication.azure.com",
			acs:      []string{key},
		},
		{
			name:     "plain http upstream",
			upstream: "http://127.0.0.1:8081",
			acs:      []string{"dial_timeout 2s", key, "keepalive off", "compression off", "versions 1.1 2"},
		},
		{
			name:     "nested block last",
			upstream: "https://contoso.communication.azure.com",
			acs: []string{
				key,
				"write_timeout 10s",
				"tls_trust_pool file {\n\t\t\t\tpem_file /etc/ssl/acs-ca.pem\n\t\t\t}",
			},
		},
		{
			name:     "nested block before ours",
			upstream: "https://contoso.communication.azure.com",
			acs: []string{
				"network_proxy url http://proxy.internal:3128",
				"tls_trust_pool file {\n\t\t\t\tpem_file /etc/ssl/acs-ca.pem\n\t\t\t}",
				key,
				"response_header_timeout 20s",
				"max_conns_per_host 16",
				"keepalive_idle_conns 4",
				"read_buffer 8KiB",
				"tls_timeout 7s",
				"tls_insecure_skip_verify",
				"tls_renegotiation once",
				"resolvers 10.0.0.53",
				size,
			},
		},
	}
	build := func(proto, upstream string, lines []string) string {
		var b strings.Builder
		b.WriteString(":8080 {\n\treverse_proxy " + upstream + " {\n\t\ttransport " + proto + " {\n")
		for _, l := range lines {
			b.WriteString("\t\t\t" + l + "\n")
		}
		b.WriteString("\t\t}\n\t}\n}\n")
		return b.String()
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var httpLines []string
			for _, l := range tt.acs {
				if l != key && l != size {
					httpLines = append(httpLines, l)
				}
			}
			acsCfg := build("acs_hmac", tt.upstream, tt.acs)
			got := transportJSON(t, acsCfg)
			want := transportJSON(t, build("http", tt.upstream, httpLines))
			checkSameTransport(t, acsCfg, got, want, strings.Contains(strings.Join(tt.acs, "\n"), size))
		})
	}
}

// checkSameTransport requires got (acs_hmac) to be want (http) plus the
// acs_hmac fields.
func checkSameTransport(t *testing.T, caddyfile string, got, want map[string]any, withSize bool) {
	t.Helper()
	if got["protocol"] != "acs_hmac" {
		t.Errorf("protocol = %v, want acs_hmac", got["protocol"])
	}
	ks, _ := got["key_source"].(map[string]any)
	if ks["source"] != "access_key" || ks["access_key"] != "{env.ACS_ACCESS_KEY}" {
		t.Errorf("key_source = %v, want the access_key source with the placeholder kept", got["key_source"])
	}
	if withSize {
		if got["max_body_size"] != float64(8<<20) {
			t.Errorf("max_body_size = %v, want %d", got["max_body_size"], 8<<20)
		}
	} else if _, ok := got["max_body_size"]; ok {
		t.Errorf("max_body_size = %v, want it omitted", got["max_body_size"])
	}
	got, want = clone(got), clone(want)
	for _, k := range []string{"protocol", "key_source", "max_body_size"} {
		delete(got, k)
	}
	delete(want, "protocol")
	if !reflect.DeepEqual(got, want) {
		g, _ := json.MarshalIndent(got, "", "\t")
		w, _ := json.MarshalIndent(want, "", "\t")
		t.Errorf("acs_hmac transport differs from the http transport with the same subdirectives\nCaddyfile:\n%s\nacs_hmac (without its own fields):\n%s\nhttp:\n%s", caddyfile, g, w)
	}
}

func clone(m map[string]any) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// A transport block inside a snippet or an imported file must keep its http
// subdirectives, as "transport http" does there.
func TestTransportSubdirectivesInSnippet(t *testing.T) {
	build := func(proto string, lines ...string) string {
		var b strings.Builder
		b.WriteString("(acs) {\n\ttransport " + proto + " {\n")
		for _, l := range lines {
			b.WriteString("\t\t" + l + "\n")
		}
		b.WriteString("\t}\n}\n\n:8080 {\n\treverse_proxy https://contoso.communication.azure.com {\n\t\timport acs\n\t}\n}\n")
		return b.String()
	}
	subs := []string{"dial_timeout 5s", "read_timeout 30s", "tls_server_name x.example"}
	acsCfg := build("acs_hmac", append([]string{"access_key {env.ACS_ACCESS_KEY}"}, subs...)...)
	got := transportJSON(t, acsCfg)
	want := transportJSON(t, build("http", subs...))
	if _, ok := want["dial_timeout"]; !ok {
		t.Fatalf("control: transport http in a snippet lost dial_timeout: %v", want)
	}
	checkSameTransport(t, acsCfg, got, want, false)
}
