package module

import (
	"encoding/json"
	"slices"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/dustin/go-humanize"
)

// keySourceDirectives are the subdirectives that choose a key source; a block
// takes exactly one of them.
var keySourceDirectives = []string{"connection_string", "access_key", "key_file", "key_vault"}

func isKeySourceDirective(name string) bool { return slices.Contains(keySourceDirectives, name) }

// unmarshalKeySource parses one key-source subdirective at d's cursor into
// *raw. chosen is the subdirective already seen in this block, if any.
func unmarshalKeySource(d *caddyfile.Dispenser, raw *json.RawMessage, chosen *string) error {
	name := d.Val()
	if *chosen != "" {
		return d.Errf("only one key source may be given, but found both %s and %s", *chosen, name)
	}
	*chosen = name
	var arg string
	if !d.Args(&arg) {
		return d.ArgErr()
	}
	if d.NextArg() {
		return d.Errf("%s takes exactly one argument", name)
	}
	var src any
	module := name
	switch name {
	case "connection_string":
		src = ConnectionStringSource{ConnectionString: arg}
	case "access_key":
		src = AccessKeySource{AccessKey: arg}
	case "key_file":
		src = &KeyFileSource{Path: arg}
	case "key_vault":
		kv, err := unmarshalKeyVault(d, arg)
		if err != nil {
			return err
		}
		src, module = kv, "azure_key_vault"
	}
	if name != "key_vault" && d.NextBlock(d.Nesting()) {
		return d.Errf("%s takes no block", name)
	}
	*raw = caddyconfig.JSONModuleObject(src, "source", module, nil)
	return nil
}

// unmarshalKeyVault parses the key_vault block:
//
//	key_vault <secret identifier URL> {
//		credential default | managed_identity [<client id>] | workload_identity | azure_cli | client_secret <tenant> <client id> <secret>
//		refresh <duration>
//		disable_challenge_resource_verification
//	}
func unmarshalKeyVault(d *caddyfile.Dispenser, secretURL string) (*KeyVaultSource, error) {
	kv := &KeyVaultSource{SecretURL: secretURL}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch d.Val() {
		case "credential":
			if kv.AzureCredential != nil {
				return nil, d.Err("key_vault: credential given twice")
			}
			args := d.RemainingArgs()
			if len(args) == 0 {
				return nil, d.Err("key_vault: credential needs a kind: default, managed_identity, workload_identity, azure_cli or client_secret")
			}
			c := &AzureCredential{Kind: args[0]}
			switch args[0] {
			case "default", "workload_identity", "azure_cli":
				if len(args) != 1 {
					return nil, d.Errf("key_vault: credential %s takes no arguments", args[0])
				}
			case "managed_identity":
				if len(args) > 2 {
					return nil, d.Err("key_vault: credential managed_identity takes at most one argument, a client ID")
				}
				if len(args) == 2 {
					c.ClientID = args[1]
				}
			case "client_secret":
				if len(args) != 4 {
					return nil, d.Err("key_vault: credential client_secret needs <tenant id> <client id> <client secret>")
				}
				c.TenantID, c.ClientID, c.ClientSecret = args[1], args[2], args[3]
			default:
				return nil, d.Errf("key_vault: unknown credential %q: want default, managed_identity, workload_identity, azure_cli or client_secret", args[0])
			}
			kv.AzureCredential = c
		case "refresh":
			var arg string
			if !d.Args(&arg) || d.NextArg() {
				return nil, d.Err("key_vault: refresh takes exactly one duration, such as 5m")
			}
			dur, err := caddy.ParseDuration(arg)
			if err != nil || dur <= 0 {
				return nil, d.Errf("key_vault: invalid refresh duration %q", arg)
			}
			kv.RefreshInterval = caddy.Duration(dur)
		case "disable_challenge_resource_verification":
			if d.NextArg() {
				return nil, d.ArgErr()
			}
			kv.DisableChallengeResourceVerification = true
		default:
			return nil, d.Errf("key_vault: unrecognized subdirective %q", d.Val())
		}
	}
	return kv, nil
}

// unmarshalSize parses a max_body_size argument ("32MiB", "1MB", "4096").
func unmarshalSize(d *caddyfile.Dispenser) (int64, error) {
	name := d.Val()
	var arg string
	if !d.Args(&arg) {
		return 0, d.ArgErr()
	}
	if d.NextArg() {
		return 0, d.Errf("%s takes exactly one argument", name)
	}
	n, err := humanize.ParseBytes(arg)
	if err != nil || n == 0 || n > 1<<40 {
		return 0, d.Errf("%s: invalid size %q (want a positive size such as 32MiB)", name, arg)
	}
	return int64(n), nil
}

func missingKeySource(d *caddyfile.Dispenser, directive string) error {
	return d.Errf("%s: a key source is required: one of %s", directive, strings.Join(keySourceDirectives, ", "))
}

// UnmarshalCaddyfile sets up the transport from Caddyfile tokens:
//
//	transport acs_hmac {
//		connection_string <endpoint=...;accesskey=...> | access_key <base64> | key_file <path>
//		max_body_size <size>
//		# ...and every subdirective of the http transport
//	}
func (t *Transport) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // transport name
	nameTok := d.Token()
	if d.NextArg() {
		return d.ArgErr()
	}
	var open caddyfile.Token // the block's own braces, reused below
	if d.Next() {
		open = d.Token()
		d.Prev()
	}
	var chosen string
	var rest []caddyfile.Token // the http transport's subdirectives, passed on as they are
	for d.NextBlock(0) {
		switch name := d.Val(); {
		case isKeySourceDirective(name):
			if err := unmarshalKeySource(d, &t.KeySourceRaw, &chosen); err != nil {
				return err
			}
		case name == "max_body_size":
			n, err := unmarshalSize(d)
			if err != nil {
				return err
			}
			t.MaxBodySize = n
		default:
			rest = append(rest, d.NextSegment()...)
		}
	}
	if chosen == "" {
		return missingKeySource(d, "acs_hmac")
	}
	if len(rest) > 0 {
		// Re-wrap the remaining subdirectives in the block's own braces, as
		// an http transport block: the tokens keep their lines and import
		// chains (snippets, imported files), so errors point at the user's file.
		end := d.Token() // the closing brace NextBlock stopped at
		toks := make([]caddyfile.Token, 0, len(rest)+3)
		toks = append(append(append(toks, nameTok, open), rest...), end)
		if err := t.HTTPTransport.UnmarshalCaddyfile(caddyfile.NewDispenser(toks)); err != nil {
			return err
		}
	}
	return nil
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens:
//
//	acs_hmac_verify {
//		connection_string <...> | access_key <base64> | key_file <path>
//		max_body_size <size>
//		max_skew <duration>
//	}
func (v *Verify) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // directive name
	if d.NextArg() {
		return d.ArgErr()
	}
	var chosen string
	for d.NextBlock(0) {
		switch name := d.Val(); {
		case isKeySourceDirective(name):
			if err := unmarshalKeySource(d, &v.KeySourceRaw, &chosen); err != nil {
				return err
			}
		case name == "max_body_size":
			n, err := unmarshalSize(d)
			if err != nil {
				return err
			}
			v.MaxBodySize = n
		case name == "max_skew":
			var arg string
			if !d.Args(&arg) || d.NextArg() {
				return d.Err("max_skew takes exactly one duration, such as 15m")
			}
			dur, err := caddy.ParseDuration(arg)
			if err != nil || dur <= 0 {
				return d.Errf("max_skew: invalid duration %q", arg)
			}
			v.MaxSkew = caddy.Duration(dur)
		default:
			return d.Errf("acs_hmac_verify: unrecognized subdirective %q", name)
		}
	}
	if chosen == "" {
		return missingKeySource(d, "acs_hmac_verify")
	}
	return nil
}

// Interface guards
var (
	_ caddyfile.Unmarshaler = (*Transport)(nil)
	_ caddyfile.Unmarshaler = (*Verify)(nil)
)
