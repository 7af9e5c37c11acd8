package signer_test

import (
	"bytes"
	"encoding/base64"
	"errors"
	"strings"
	"testing"

	"github.com/acsproxy/caddy-acs-hmac/signer"
)

// Test keys: distinctive enough that any echo in an error is unmistakable.
var (
	csRaw    = []byte("\x8f\x01secret-bytes-for-connstr-tests!\xfe\x02") // 35 bytes -> one '=' of padding
	csKey    = base64.StdEncoding.EncodeToString(csRaw)
	csRaw31  = bytes.Repeat([]byte{0xc3, 0x5a, 0x11, 0x7e}, 8)[:31] // 31 bytes -> "==" padding
	csKey31  = base64.StdEncoding.EncodeToString(csRaw31)
	csBadKey = "QUJD*REVG!R0hJ" + strings.Repeat("x", 20) // not base64
)

func TestParseConnectionString(t *testing.T) {
	if !strings.HasSuffix(csKey, "=") || strings.HasSuffix(csKey, "==") || !strings.HasSuffix(csKey31, "==") {
		t.Fatalf("test keys lack the intended padding: %q %q", csKey, csKey31)
	}
	tests := []struct {
		name         string
		in           string
		wantEndpoint string
		wantHost     string
		wantRaw      []byte
	}{
		{"portal form", "endpoint=https://res.communication.azure.com/;accesskey=" + csKey,
			"https://res.communication.azure.com", "res.communication.azure.com", csRaw},
		{"geo portal form", "endpoint=https://res.europe.communication.azure.com/;accesskey=" + csKey,
			"https://res.europe.communication.azure.com", "res.europe.communication.azure.com", csRaw},
		{"keys upper-case, reversed", "ACCESSKEY=" + csKey + ";ENDPOINT=https://res.communication.azure.com/",
			"https://res.communication.azure.com", "res.communication.azure.com", csRaw},
		{"keys mixed case", "EndPoint=https://res.communication.azure.com/;AccessKey=" + csKey,
			"https://res.communication.azure.com", "res.communication.azure.com", csRaw},
		{"whitespace around parts", "  endpoint = https://res.communication.azure.com/ ;\taccesskey =  " + csKey + " \n",
			"https://res.communication.azure.com", "res.communication.azure.com", csRaw},
		{"newline-separated parts", "\nendpoint=https://res.communication.azure.com/;\r\naccesskey=" + csKey + "\r\n",
			"https://res.communication.azure.com", "res.communication.azure.com", csRaw},
		{"no trailing slash", "endpoint=https://res.communication.azure.com;accesskey=" + csKey,
			"https://res.communication.azure.com", "res.communication.azure.com", csRaw},
		{"double trailing slash", "endpoint=https://res.communication.azure.com//;accesskey=" + csKey,
			"https://res.communication.azure.com", "res.communication.azure.com", csRaw},
		{"trailing semicolon", "endpoint=https://res.communication.azure.com/;accesskey=" + csKey + ";",
			"https://res.communication.azure.com", "res.communication.azure.com", csRaw},
		{"empty parts", ";;endpoint=https://res.communication.azure.com/;;accesskey=" + csKey + ";;",
			"https://res.communication.azure.com", "res.communication.azure.com", csRaw},
		{"== padding preserved", "endpoint=https://res.communication.azure.com/;accesskey=" + csKey31,
			"https://res.communication.azure.com", "res.communication.azure.com", csRaw31},
		{"unpadded key accepted", "endpoint=https://res.communication.azure.com/;accesskey=" + strings.TrimRight(csKey31, "="),
			"https://res.communication.azure.com", "res.communication.azure.com", csRaw31},
		{"unknown part ignored", "endpoint=https://res.communication.azure.com/;accesskey=" + csKey + ";foo=bar;x=",
			"https://res.communication.azure.com", "res.communication.azure.com", csRaw},
		{"non-default port kept", "endpoint=https://res.example:8443/;accesskey=" + csKey,
			"https://res.example:8443", "res.example:8443", csRaw},
		{"default https port dropped", "endpoint=https://res.example:443/;accesskey=" + csKey,
			"https://res.example", "res.example", csRaw},
		{"default http port dropped", "endpoint=http://localhost:80/;accesskey=" + csKey,
			"http://localhost", "localhost", csRaw},
		{"http with 443 kept", "endpoint=http://localhost:443/;accesskey=" + csKey,
			"http://localhost:443", "localhost:443", csRaw},
		{"http emulator port", "endpoint=http://127.0.0.1:10000;accesskey=" + csKey,
			"http://127.0.0.1:10000", "127.0.0.1:10000", csRaw},
		{"scheme and host lower-cased", "endpoint=HTTPS://Res.Communication.Azure.COM/;accesskey=" + csKey,
			"https://res.communication.azure.com", "res.communication.azure.com", csRaw},
		{"ipv6 default port", "endpoint=https://[::1]:443/;accesskey=" + csKey,
			"https://[::1]", "[::1]", csRaw},
		{"ipv6 other port", "endpoint=https://[::1]:8443/;accesskey=" + csKey,
			"https://[::1]:8443", "[::1]:8443", csRaw},
		{"equals in endpoint value is fine", "endpoint=https://res.communication.azure.com/;accesskey=" + csKey,
			"https://res.communication.azure.com", "res.communication.azure.com", csRaw},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := signer.ParseConnectionString(tc.in)
			if err != nil {
				t.Fatalf("ParseConnectionString: %v", err)
			}
			if c.Endpoint == nil || c.Key == nil {
				t.Fatalf("Credential = %v, want endpoint and key", c)
			}
			if got := c.Endpoint.String(); got != tc.wantEndpoint {
				t.Errorf("Endpoint = %q, want %q", got, tc.wantEndpoint)
			}
			if c.Endpoint.Host != tc.wantHost {
				t.Errorf("Endpoint.Host = %q, want %q", c.Endpoint.Host, tc.wantHost)
			}
			if c.Endpoint.Path != "" || c.Endpoint.RawQuery != "" || c.Endpoint.User != nil {
				t.Errorf("Endpoint has more than scheme://host: %#v", *c.Endpoint)
			}
			want, _ := signer.NewKey(tc.wantRaw)
			if !c.Key.Equal(want) {
				t.Errorf("decoded key bytes differ from %x", tc.wantRaw)
			}
		})
	}
}

func TestParseConnectionStringErrors(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		wantMsg string // a word the error must contain, naming the problem
		keyErr  bool   // also wraps ErrKey
	}{
		{"empty string", "", "missing endpoint", false},
		{"only separators", " ; ;; ", "missing endpoint", false},
		{"missing endpoint", "accesskey=" + csKey, "missing endpoint", false},
		{"missing accesskey", "endpoint=https://res.communication.azure.com/", "missing accesskey", false},
		{"empty endpoint", "endpoint=;accesskey=" + csKey, "missing endpoint", false},
		{"blank endpoint", "endpoint=   ;accesskey=" + csKey, "missing endpoint", false},
		{"empty accesskey", "endpoint=https://res.communication.azure.com/;accesskey=", "missing accesskey", false},
		{"blank accesskey", "endpoint=https://res.communication.azure.com/;accesskey=  ", "missing accesskey", false},
		{"endpoint twice", "endpoint=https://a/;endpoint=https://b/;accesskey=" + csKey, "endpoint given twice", false},
		{"accesskey twice", "endpoint=https://a/;accesskey=" + csKey + ";accesskey=" + csKey31, "accesskey given twice", false},
		{"part without =", "endpoint=https://res.communication.azure.com/;" + strings.TrimRight(csKey, "="), "no '='", false},
		// A padded key pasted as a part splits at its padding and is ignored as an unknown name.
		{"padded bare key as a part", "endpoint=https://res.communication.azure.com/;" + csKey31, "missing accesskey", false},
		{"bare key", strings.TrimRight(csKey, "=") + ";", "no '='", false},
		{"ftp scheme", "endpoint=ftp://res.communication.azure.com/;accesskey=" + csKey, "http", false},
		{"sb scheme", "endpoint=sb://res.servicebus.windows.net/;accesskey=" + csKey, "http", false},
		{"relative host only", "endpoint=res.communication.azure.com;accesskey=" + csKey, "http", false},
		{"relative path", "endpoint=/emails;accesskey=" + csKey, "http", false},
		{"scheme-relative", "endpoint=//res.communication.azure.com/;accesskey=" + csKey, "http", false},
		{"no host", "endpoint=https:///;accesskey=" + csKey, "host", false},
		{"port only", "endpoint=https://:443/;accesskey=" + csKey, "host", false},
		{"opaque", "endpoint=https:res.communication.azure.com;accesskey=" + csKey, "host", false},
		{"endpoint with path", "endpoint=https://res.communication.azure.com/emails;accesskey=" + csKey, "path", false},
		{"endpoint with query", "endpoint=https://res.communication.azure.com/?api-version=1;accesskey=" + csKey, "query", false},
		{"endpoint with fragment", "endpoint=https://res.communication.azure.com/#x;accesskey=" + csKey, "path", false},
		{"key as endpoint user info", "endpoint=https://user:" + csKey + "@res.communication.azure.com/;accesskey=" + csKey, "endpoint", false},
		{"endpoint with user info", "endpoint=https://user:pass@res.communication.azure.com/;accesskey=" + csKey, "user info", false},
		{"key in endpoint query", "endpoint=https://res.communication.azure.com/?accesskey=" + csKey + ";accesskey=" + csKey, "query", false},
		{"unparsable endpoint", "endpoint=https://res com/%zz;accesskey=" + csKey, "endpoint", false},
		{"bad port", "endpoint=https://res.communication.azure.com:https/;accesskey=" + csKey, "endpoint", false},
		{"bad base64 key", "endpoint=https://res.communication.azure.com/;accesskey=" + csBadKey, "base64", true},
		{"key with a bad char", "endpoint=https://res.communication.azure.com/;accesskey=" + csKey[:10] + "*" + csKey[11:], "base64", true},
		{"url-safe key", "endpoint=https://res.communication.azure.com/;accesskey=" + strings.NewReplacer("+", "-", "/", "_").Replace(base64.StdEncoding.EncodeToString([]byte{0xfb, 0xff, 0xbf, 0xfb, 0xef, 0xfe})) + csKey, "base64", true},
		{"key decodes to nothing", "endpoint=https://res.communication.azure.com/;accesskey===", "empty", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := signer.ParseConnectionString(tc.in)
			if err == nil {
				t.Fatalf("ParseConnectionString(%q) = %v, want error", tc.in, c)
			}
			if !errors.Is(err, signer.ErrConnectionString) {
				t.Errorf("error %q does not wrap ErrConnectionString", err)
			}
			if tc.keyErr != errors.Is(err, signer.ErrKey) {
				t.Errorf("error %q: errors.Is(ErrKey) = %v, want %v", err, !tc.keyErr, tc.keyErr)
			}
			if c.Key != nil || c.Endpoint != nil {
				t.Errorf("error result carries a credential: %v", c)
			}
			msg := err.Error()
			if !strings.Contains(msg, tc.wantMsg) {
				t.Errorf("error %q does not mention %q", msg, tc.wantMsg)
			}
			assertNoKeyText(t, msg, tc.in)
		})
	}
}

// assertNoKeyText fails if msg contains any test key text, any accesskey
// value from the input, or a long-enough fragment of one.
func assertNoKeyText(t *testing.T, msg, in string) {
	t.Helper()
	secrets := []string{csKey, csKey31, csBadKey, strings.TrimRight(csKey, "="), strings.TrimRight(csKey31, "=")}
	for _, v := range accessKeyValues(in) {
		if len(v) >= 4 {
			secrets = append(secrets, v)
		}
	}
	for _, s := range secrets {
		// Any 8-character window of the key is a leak too.
		for i := 0; i+8 <= len(s); i++ {
			if strings.Contains(msg, s[i:i+8]) {
				t.Errorf("error %q contains key text %q", msg, s[i:i+8])
				return
			}
		}
	}
}

// accessKeyValues returns the trimmed value of every accesskey= part of s.
func accessKeyValues(s string) []string {
	var out []string
	for part := range strings.SplitSeq(s, ";") {
		name, val, ok := strings.Cut(strings.TrimSpace(part), "=")
		if ok && strings.EqualFold(strings.TrimSpace(name), "accesskey") {
			out = append(out, strings.TrimSpace(val))
		}
	}
	return out
}

func TestParseCredential(t *testing.T) {
	want, _ := signer.NewKey(csRaw)
	tests := []struct {
		name         string
		in           string
		wantEndpoint string // "" means a bare key (nil endpoint)
		wantErr      error
	}{
		{"bare key", csKey, "", nil},
		{"bare key, key-file newline", csKey + "\n", "", nil},
		{"bare key, CRLF and spaces", "  " + csKey + " \r\n", "", nil},
		{"bare key, no padding", strings.TrimRight(csKey, "="), "", nil},
		{"connection string", "endpoint=https://res.communication.azure.com/;accesskey=" + csKey, "https://res.communication.azure.com", nil},
		{"connection string, reversed, trailing newline", "accesskey=" + csKey + ";endpoint=https://res.communication.azure.com\n", "https://res.communication.azure.com", nil},
		{"accesskey= only is a connection string", "accesskey=" + csKey, "", signer.ErrConnectionString},
		{"ACCESSKEY= only is a connection string", "ACCESSKEY=" + csKey, "", signer.ErrConnectionString},
		{"endpoint= only", "Endpoint=https://res.communication.azure.com/", "", signer.ErrConnectionString},
		{"key with semicolon", csKey + ";", "", signer.ErrConnectionString},
		{"empty", "", "", signer.ErrKey},
		{"blank", " \n ", "", signer.ErrKey},
		{"bad bare key", csBadKey, "", signer.ErrKey},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := signer.ParseCredential(tc.in)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("ParseCredential error = %v, want %v", err, tc.wantErr)
				}
				if tc.wantErr == signer.ErrKey && errors.Is(err, signer.ErrConnectionString) {
					t.Errorf("bare-key error %q wraps ErrConnectionString", err)
				}
				assertNoKeyText(t, err.Error(), tc.in)
				return
			}
			if err != nil {
				t.Fatalf("ParseCredential: %v", err)
			}
			if !c.Key.Equal(want) {
				t.Error("key differs")
			}
			switch {
			case tc.wantEndpoint == "" && c.Endpoint != nil:
				t.Errorf("bare key gave endpoint %v", c.Endpoint)
			case tc.wantEndpoint != "" && (c.Endpoint == nil || c.Endpoint.String() != tc.wantEndpoint):
				t.Errorf("Endpoint = %v, want %s", c.Endpoint, tc.wantEndpoint)
			}
		})
	}
}

func TestParseEndpoint(t *testing.T) {
	ok := map[string]string{
		"https://res.communication.azure.com/":     "https://res.communication.azure.com",
		"https://res.communication.azure.com":      "https://res.communication.azure.com",
		" https://res.communication.azure.com/ \n": "https://res.communication.azure.com",
		"HTTPS://RES.communication.azure.com:443/": "https://res.communication.azure.com",
		"http://localhost:8080":                    "http://localhost:8080",
		"https://[::1]:443":                        "https://[::1]",
		"https://[2001:DB8::1]:8443/":              "https://[2001:db8::1]:8443",
	}
	for in, want := range ok {
		u, err := signer.ParseEndpoint(in)
		if err != nil {
			t.Errorf("ParseEndpoint(%q): %v", in, err)
			continue
		}
		if u.String() != want {
			t.Errorf("ParseEndpoint(%q) = %q, want %q", in, u, want)
		}
	}
	for _, in := range []string{"", "res.communication.azure.com", "ftp://x/", "https://", "https://x/y", "https://x?y", "https://u@x/", "mailto:a@b", "https://x/#f"} {
		if u, err := signer.ParseEndpoint(in); err == nil {
			t.Errorf("ParseEndpoint(%q) = %v, want error", in, u)
		}
	}
}

func TestCanonicalHost(t *testing.T) {
	tests := []struct {
		scheme, host, want string
	}{
		{"https", "res.communication.azure.com", "res.communication.azure.com"},
		{"https", "Res.Communication.Azure.COM", "res.communication.azure.com"},
		{"https", "example.com:443", "example.com"},
		{"HTTPS", "example.com:443", "example.com"},
		{"https", "example.com:80", "example.com:80"},
		{"https", "example.com:8443", "example.com:8443"},
		{"https", "Example.com:8443", "example.com:8443"},
		{"http", "example.com:80", "example.com"},
		{"Http", "example.com:80", "example.com"},
		{"http", "example.com:443", "example.com:443"},
		{"http", "localhost:8080", "localhost:8080"},
		{"https", "example.com:", "example.com"},
		{"https", "127.0.0.1", "127.0.0.1"},
		{"https", "127.0.0.1:443", "127.0.0.1"},
		{"http", "127.0.0.1:10000", "127.0.0.1:10000"},
		{"https", "[::1]:443", "[::1]"},
		{"https", "[::1]", "[::1]"},
		{"https", "[::1]:8443", "[::1]:8443"},
		{"http", "[::1]:80", "[::1]"},
		{"http", "[::1]:443", "[::1]:443"},
		{"https", "[FE80::1]:443", "[fe80::1]"},
		{"https", "[2001:DB8::A]:9443", "[2001:db8::a]:9443"},
		{"", "example.com:443", "example.com:443"},
		{"", "example.com:80", "example.com:80"},
	}
	for _, tc := range tests {
		if got := signer.CanonicalHost(tc.scheme, tc.host); got != tc.want {
			t.Errorf("CanonicalHost(%q, %q) = %q, want %q", tc.scheme, tc.host, got, tc.want)
		}
	}
}
