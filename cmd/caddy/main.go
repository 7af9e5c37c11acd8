// Command caddy is Caddy with its standard modules plus caddy-acs-hmac.
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/acsproxy/caddy-acs-hmac"
)

func main() {
	caddycmd.Main()
}
