package module

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
	"go.uber.org/zap"

	"github.com/acsproxy/caddy-acs-hmac/signer"
)

// staticKeys is a KeySource with one key.
type staticKeys struct{ cred signer.Credential }

func (s staticKeys) Credential() (signer.Credential, error) { return s.cred, nil }

// BenchmarkTransport measures the acs_hmac transport's cost per request
// against Caddy's plain HTTP transport, side by side, over loopback to the
// same upstream: compare the two sub-benchmarks of a workload as a ratio.
func BenchmarkTransport(b *testing.B) {
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		_, _ = io.WriteString(w, `{"ok":true}`)
	}))
	defer upstream.Close()

	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	plain := new(reverseproxy.HTTPTransport)
	if err := plain.Provision(ctx); err != nil {
		b.Fatal(err)
	}
	key, err := signer.ParseKey("ZGVtby1rZXktZm9yLWJlbmNobWFya3Mtb25seS4uLi4=")
	if err != nil {
		b.Fatal(err)
	}
	signing := &Transport{HTTPTransport: new(reverseproxy.HTTPTransport), keys: staticKeys{signer.Credential{Key: key}},
		MaxBodySize: DefaultMaxBodySize, logger: zap.NewNop()}
	if err := signing.HTTPTransport.Provision(ctx); err != nil {
		b.Fatal(err)
	}

	host := strings.TrimPrefix(upstream.URL, "http://")
	body1k := bytes.Repeat([]byte(`{"message":"hi"}`), 64)
	for _, w := range []struct {
		name   string
		method string
		body   []byte
	}{{"GET", "GET", nil}, {"POST1KiB", "POST", body1k}} {
		for _, tr := range []struct {
			name string
			rt   http.RoundTripper
		}{{"plain", plain}, {"acs_hmac", signing}, {"embedded", signing.HTTPTransport}} {
			b.Run(w.name+"/"+tr.name, func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					rctx, rcancel := context.WithCancel(context.WithValue(context.Background(), caddyhttp.VarsCtxKey, map[string]any{}))
					req, _ := http.NewRequestWithContext(rctx, w.method, "/sms?api-version=2021-03-07", nil)
					req.URL.Host, req.Host = host, host
					req.Header.Set("Content-Type", "application/json")
					if w.body != nil {
						req.Body, req.ContentLength = io.NopCloser(bytes.NewReader(w.body)), int64(len(w.body))
					}
					resp, err := tr.rt.RoundTrip(req)
					if err != nil || resp.StatusCode != 200 {
						b.Fatalf("%v %v", err, resp)
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					rcancel()
				}
			})
		}
	}
}
