// Package caddyacshmac is the caddy-acs-hmac Caddy plugin: a reverse-proxy
// transport that signs requests to Azure Communication Services with the
// access key (HMAC-SHA256), and a handler that verifies such signatures.
//
// Importing this package registers everything, so
//
//	xcaddy build --with github.com/acsproxy/caddy-acs-hmac
//
// builds a Caddy that has it.
package caddyacshmac

import (
	_ "github.com/acsproxy/caddy-acs-hmac/caddyfile" // the Caddyfile surface
	_ "github.com/acsproxy/caddy-acs-hmac/module"    // the Caddy modules
)
