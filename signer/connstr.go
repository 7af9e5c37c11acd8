package signer

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
)

// Credential is what a key source yields: a key, and the endpoint it belongs
// to when the source was a connection string (nil for a bare key).
type Credential struct {
	Endpoint *url.URL // scheme and host only; nil for a bare key
	Key      *Key
}

// ErrConnectionString is wrapped by every connection-string parse error.
var ErrConnectionString = errors.New("acs connection string")

// ParseConnectionString parses the portal form
// "endpoint=https://<resource>.communication.azure.com/;accesskey=<base64>".
// Parts are split on ';' and at the first '=' only, so key padding survives;
// names are case-insensitive and may come in any order; white space around
// parts is trimmed; empty parts are ignored. Errors name the problem and never
// contain the key.
func ParseConnectionString(s string) (Credential, error) {
	var endpoint, key string
	var haveEndpoint, haveKey bool
	for part := range strings.SplitSeq(s, ";") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		name, val, ok := strings.Cut(part, "=")
		if !ok {
			return Credential{}, fmt.Errorf("%w: a part has no '=' (expected endpoint=...;accesskey=...)", ErrConnectionString)
		}
		name, val = strings.TrimSpace(name), strings.TrimSpace(val)
		switch strings.ToLower(name) {
		case "endpoint":
			if haveEndpoint {
				return Credential{}, fmt.Errorf("%w: endpoint given twice", ErrConnectionString)
			}
			endpoint, haveEndpoint = val, true
		case "accesskey":
			if haveKey {
				return Credential{}, fmt.Errorf("%w: accesskey given twice", ErrConnectionString)
			}
			key, haveKey = val, true
		default:
			// Unknown parts are ignored, as the SDKs do; name them without values.
		}
	}
	if !haveEndpoint || endpoint == "" {
		return Credential{}, fmt.Errorf("%w: missing endpoint", ErrConnectionString)
	}
	if !haveKey || key == "" {
		return Credential{}, fmt.Errorf("%w: missing accesskey", ErrConnectionString)
	}
	u, err := ParseEndpoint(endpoint)
	if err != nil {
		return Credential{}, fmt.Errorf("%w: %w", ErrConnectionString, err)
	}
	k, err := ParseKey(key)
	if err != nil {
		return Credential{}, fmt.Errorf("%w: accesskey: %w", ErrConnectionString, err)
	}
	return Credential{Endpoint: u, Key: k}, nil
}

// ParseCredential accepts what a secret or key file may hold: a full
// connection string, or a bare base64 key.
func ParseCredential(s string) (Credential, error) {
	t := strings.TrimSpace(s)
	lower := strings.ToLower(t)
	if strings.Contains(t, ";") || strings.HasPrefix(lower, "endpoint=") || strings.HasPrefix(lower, "accesskey=") {
		return ParseConnectionString(t)
	}
	k, err := ParseKey(t)
	if err != nil {
		return Credential{}, err
	}
	return Credential{Key: k}, nil
}

// ParseEndpoint validates an ACS endpoint: an absolute http or https URL with
// a host and nothing but an optional "/" path. It returns scheme://host[:port]
// with the host lower-cased and a default port removed.
func ParseEndpoint(endpoint string) (*url.URL, error) {
	u, err := url.Parse(strings.TrimSpace(endpoint))
	if err != nil {
		return nil, errors.New("endpoint is not a valid URL")
	}
	u.Scheme = strings.ToLower(u.Scheme)
	if u.Scheme != "https" && u.Scheme != "http" {
		return nil, errors.New("endpoint must be an absolute http:// or https:// URL")
	}
	if u.Host == "" || u.Hostname() == "" {
		return nil, errors.New("endpoint has no host")
	}
	if u.User != nil || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || strings.Contains(endpoint, "#") || strings.Trim(u.EscapedPath(), "/") != "" {
		return nil, errors.New("endpoint must be scheme://host[:port] with no path, query or user info")
	}
	return &url.URL{Scheme: u.Scheme, Host: CanonicalHost(u.Scheme, u.Host)}, nil
}

// CanonicalHost returns host lower-cased, without a port that is the default
// for scheme (443 for https, 80 for http): the form ACS and its SDKs sign.
func CanonicalHost(scheme, host string) string {
	h, port, err := net.SplitHostPort(host)
	if err != nil {
		return strings.ToLower(host) // no port
	}
	if (port == "443" && strings.EqualFold(scheme, "https")) || (port == "80" && strings.EqualFold(scheme, "http")) || port == "" {
		if strings.Contains(h, ":") {
			return "[" + strings.ToLower(h) + "]"
		}
		return strings.ToLower(h)
	}
	return strings.ToLower(host)
}

// String never prints the key.
func (c Credential) String() string {
	if c.Endpoint == nil {
		return "signer.Credential{Key:REDACTED}"
	}
	return "signer.Credential{Endpoint:" + c.Endpoint.String() + " Key:REDACTED}"
}

// GoString never prints the key.
func (c Credential) GoString() string { return c.String() }
