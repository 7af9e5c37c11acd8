// Package caddyfile is the Caddyfile surface of caddy-acs-hmac: it registers
// the acs_hmac_verify directive and its place in the handler order. The
// acs_hmac transport needs no registration here: reverse_proxy's
// "transport acs_hmac { ... }" loads it by module ID, and its Caddyfile
// unmarshaler lives next to the type in package module.
package caddyfile

import (
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/acsproxy/caddy-acs-hmac/module"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("acs_hmac_verify", parseVerify)
	// Verification must come before anything that answers or routes the
	// request, so no global "order" option is needed. Like Caddy's own auth
	// handlers it goes before basic_auth: ahead of handle, handle_path, route,
	// respond and reverse_proxy, so no block can skip it.
	httpcaddyfile.RegisterDirectiveOrder("acs_hmac_verify", httpcaddyfile.Before, "basic_auth")
}

// parseVerify sets up the acs_hmac_verify handler:
//
//	acs_hmac_verify {
//		connection_string <...> | access_key <base64> | key_file <path>
//		max_body_size <size>
//		max_skew <duration>
//	}
func parseVerify(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	v := new(module.Verify)
	if err := v.UnmarshalCaddyfile(h.Dispenser); err != nil {
		return nil, err
	}
	return v, nil
}
