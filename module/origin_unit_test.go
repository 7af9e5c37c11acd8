package module

import (
	"net/http"
	"net/url"
	"testing"
)

func TestHostPort(t *testing.T) {
	for _, tc := range []struct {
		scheme, host, want string
	}{
		{"http", "example.com", "example.com:80"},
		{"https", "example.com", "example.com:443"},
		{"HTTPS", "example.com", "example.com:443"},
		{"Http", "example.com", "example.com:80"},
		{"https", "Contoso.Communication.Azure.COM", "contoso.communication.azure.com:443"},
		{"https", "example.com:443", "example.com:443"},
		{"https", "example.com:8443", "example.com:8443"},
		{"http", "example.com:80", "example.com:80"},
		{"http", "example.com:443", "example.com:443"},
		{"https", "EXAMPLE.com:8443", "example.com:8443"},
		{"http", "127.0.0.1", "127.0.0.1:80"},
		{"http", "127.0.0.1:8080", "127.0.0.1:8080"},
		{"http", "[::1]", "[::1]:80"},
		{"https", "[::1]", "[::1]:443"},
		{"https", "[::1]:443", "[::1]:443"},
		{"https", "[::1]:8443", "[::1]:8443"},
		{"https", "[2001:DB8::1]", "[2001:db8::1]:443"},
		{"https", "[2001:DB8::1]:9000", "[2001:db8::1]:9000"},
		// An empty port means the scheme's default (RFC 3986 3.2.3; Go's
		// http.Transport dials the default port for it).
		{"https", "example.com:", "example.com:443"},
		{"http", "example.com:", "example.com:80"},
	} {
		if got := hostPort(tc.scheme, tc.host); got != tc.want {
			t.Errorf("hostPort(%q, %q) = %q, want %q", tc.scheme, tc.host, got, tc.want)
		}
	}
}

func TestSameOrigin(t *testing.T) {
	for _, tc := range []struct {
		upstream, endpoint string
		want               bool
	}{
		{"https://contoso.communication.azure.com", "https://contoso.communication.azure.com", true},
		{"https://contoso.communication.azure.com:443", "https://contoso.communication.azure.com", true},
		{"https://contoso.communication.azure.com", "https://contoso.communication.azure.com:443", true},
		{"https://CONTOSO.Communication.Azure.com:443", "https://contoso.communication.azure.com", true},
		{"HTTPS://contoso.communication.azure.com", "https://contoso.communication.azure.com", true},
		{"http://localhost:8081", "http://localhost:8081", true},
		{"http://localhost:80", "http://localhost", true},
		{"https://[::1]:443", "https://[::1]", true},
		{"https://[2001:db8::1]", "https://[2001:DB8::1]:443", true},

		// scheme mismatch
		{"http://contoso.communication.azure.com", "https://contoso.communication.azure.com", false},
		{"http://contoso.communication.azure.com:443", "https://contoso.communication.azure.com", false},
		{"https://localhost:8081", "http://localhost:8081", false},
		// port mismatch
		{"https://contoso.communication.azure.com:8443", "https://contoso.communication.azure.com", false},
		{"https://contoso.communication.azure.com", "https://contoso.communication.azure.com:8443", false},
		{"http://localhost:8082", "http://localhost:8081", false},
		{"http://localhost", "http://localhost:8081", false},
		{"https://[::1]:8443", "https://[::1]", false},
		// host mismatch
		{"https://fabrikam.communication.azure.com", "https://contoso.communication.azure.com", false},
		{"https://contoso.communication.azure.com.evil.example", "https://contoso.communication.azure.com", false},
		{"https://[::2]", "https://[::1]", false},
	} {
		up, err := url.Parse(tc.upstream)
		if err != nil {
			t.Fatal(err)
		}
		ep, err := url.Parse(tc.endpoint)
		if err != nil {
			t.Fatal(err)
		}
		// url.Parse lower-cases the scheme; keep it as written.
		if i := len(up.Scheme); tc.upstream[:i] != up.Scheme {
			up.Scheme = tc.upstream[:i]
		}
		req := &http.Request{URL: up}
		if got := sameOrigin(req, ep); got != tc.want {
			t.Errorf("sameOrigin(%s, endpoint %s) = %v, want %v", tc.upstream, tc.endpoint, got, tc.want)
		}
	}
}
