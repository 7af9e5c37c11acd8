package caddyfile_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"
)

// topLevelHandlers adapts a one-site Caddyfile (no host) and returns, for
// each top-level route of srv0, the handler names it holds, with a
// subroute's inner handlers flattened in.
func topLevelHandlers(t *testing.T, caddyfile string) [][]string {
	t.Helper()
	out, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(caddyfile), nil)
	if err != nil {
		t.Fatalf("adapting:\n%s\nerror: %v", caddyfile, err)
	}
	type route struct {
		Handle []json.RawMessage `json:"handle"`
	}
	var cfg struct {
		Apps struct {
			HTTP struct {
				Servers map[string]struct {
					Routes []route `json:"routes"`
				} `json:"servers"`
			} `json:"http"`
		} `json:"apps"`
	}
	if err := json.Unmarshal(out, &cfg); err != nil {
		t.Fatal(err)
	}
	var flatten func(hs []json.RawMessage) []string
	flatten = func(hs []json.RawMessage) []string {
		var names []string
		for _, raw := range hs {
			var h struct {
				Handler string  `json:"handler"`
				Routes  []route `json:"routes"`
			}
			if err := json.Unmarshal(raw, &h); err != nil {
				t.Fatal(err)
			}
			names = append(names, h.Handler)
			for _, r := range h.Routes {
				names = append(names, flatten(r.Handle)...)
			}
		}
		return names
	}
	var routes [][]string
	for _, r := range cfg.Apps.HTTP.Servers["srv0"].Routes {
		routes = append(routes, flatten(r.Handle))
	}
	return routes
}

// firstRouteWith returns the index of the first route holding handler, or -1.
func firstRouteWith(routes [][]string, handler string) int {
	for i, r := range routes {
		for _, h := range r {
			if h == handler {
				return i
			}
		}
	}
	return -1
}

// With no "order" option, acs_hmac_verify must run before every standard
// directive that answers a request, wherever it is written in the site.
func TestVerifyOrderedBeforeResponders(t *testing.T) {
	const verify = "acs_hmac_verify {\n\t\taccess_key {env.ACS_ACCESS_KEY}\n\t}"
	tests := []struct {
		name      string
		responder string
		handler   string // the handler the responder adapts to
	}{
		{"respond", "respond 202", "static_response"},
		{"reverse_proxy", "reverse_proxy 127.0.0.1:9000", "reverse_proxy"},
		{"file_server", "file_server", "file_server"},
		{"php_fastcgi", "php_fastcgi 127.0.0.1:9001", "reverse_proxy"},
		// handle, handle_path and route blocks answer requests too: a request
		// they match must not skip verification.
		{"handle", "handle /emails/* {\n\t\treverse_proxy 127.0.0.1:9000\n\t}", "reverse_proxy"},
		{"handle_path", "handle_path /emails/* {\n\t\treverse_proxy 127.0.0.1:9000\n\t}", "reverse_proxy"},
		{"route", "route /emails/* {\n\t\trespond 202\n\t}", "static_response"},
	}
	for _, tt := range tests {
		for _, verifyFirst := range []bool{true, false} {
			name := tt.name + "/verify written last"
			site := ":8081 {\n\t" + tt.responder + "\n\t" + verify + "\n}\n"
			if verifyFirst {
				name = tt.name + "/verify written first"
				site = ":8081 {\n\t" + verify + "\n\t" + tt.responder + "\n}\n"
			}
			t.Run(name, func(t *testing.T) {
				routes := topLevelHandlers(t, site)
				v, r := firstRouteWith(routes, "acs_hmac_verify"), firstRouteWith(routes, tt.handler)
				if v < 0 || r < 0 {
					t.Fatalf("routes %v: want both acs_hmac_verify and %s", routes, tt.handler)
				}
				if v > r || (v == r && indexOf(routes[v], "acs_hmac_verify") > indexOf(routes[v], tt.handler)) {
					t.Errorf("%s runs before acs_hmac_verify: routes %v\nCaddyfile:\n%s", tt.handler, routes, site)
				}
			})
		}
	}
}

func indexOf(s []string, v string) int {
	for i, x := range s {
		if x == v {
			return i
		}
	}
	return -1
}

// The matcher forms of a handler directive work for acs_hmac_verify, and
// the route keeps the matcher.
func TestVerifyMatcherTokenIsNotAnArgument(t *testing.T) {
	for _, m := range []string{"*", "/api/*", "@signed"} {
		t.Run(m, func(t *testing.T) {
			site := ":8081 {\n\t@signed header Authorization HMAC-SHA256*\n\tacs_hmac_verify " + m + " {\n\t\taccess_key {env.ACS_ACCESS_KEY}\n\t}\n\trespond 202\n}\n"
			out, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(site), nil)
			if err != nil {
				t.Fatalf("adapting:\n%s\nerror: %v", site, err)
			}
			if !strings.Contains(string(out), `"handler":"acs_hmac_verify"`) {
				t.Errorf("no acs_hmac_verify handler in %s", out)
			}
		})
	}
}
