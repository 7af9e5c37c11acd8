package module

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/acsproxy/caddy-acs-hmac/signer"
)

func init() {
	caddy.RegisterModule(Transport{})
}

// Transport is a reverse_proxy transport that signs every request it sends
// with the ACS access key (HMAC-SHA256), then sends it with Caddy's standard
// HTTP transport, which it embeds: TLS, timeouts, keep-alive, versions and the
// http transport's Caddyfile subdirectives all work as usual.
//
// It is the last thing to touch a request before it leaves, so it signs the
// Host and request-target exactly as they go on the wire, and every attempt
// (each retry) is signed afresh. A request that cannot be signed is never
// sent: the client gets the proxy's own JSON error instead.
type Transport struct {
	*reverseproxy.HTTPTransport

	// The key source: one module of the acs_hmac.key_sources namespace.
	KeySourceRaw json.RawMessage `json:"key_source,omitempty" caddy:"namespace=acs_hmac.key_sources inline_key=source"`

	// Largest request body that is signed and forwarded, in bytes; larger
	// bodies get 413 and never reach the upstream. Default: 32 MiB.
	MaxBodySize int64 `json:"max_body_size,omitempty"`

	keys   KeySource
	logger *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (Transport) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID: "http.reverse_proxy.transport.acs_hmac",
		New: func() caddy.Module {
			return &Transport{HTTPTransport: new(reverseproxy.HTTPTransport)}
		},
	}
}

// Provision sets up the embedded HTTP transport and the key source.
func (t *Transport) Provision(ctx caddy.Context) error {
	t.logger = ctx.Logger()
	if t.HTTPTransport == nil {
		t.HTTPTransport = new(reverseproxy.HTTPTransport)
	}
	if t.MaxBodySize < 0 {
		return errors.New("acs_hmac: max_body_size must not be negative")
	}
	if t.MaxBodySize == 0 {
		t.MaxBodySize = DefaultMaxBodySize
	}
	keys, err := loadKeySource(ctx, t, t.KeySourceRaw)
	if err != nil {
		return fmt.Errorf("acs_hmac: %w", err)
	}
	t.keys = keys
	registerMetrics(ctx)
	if err := t.HTTPTransport.Provision(ctx); err != nil {
		return fmt.Errorf("acs_hmac: %w", err)
	}
	return nil
}

// droppedHeaders are client-sent headers that would conflict with, or be
// confused for, the signature. Canonical keys.
var droppedHeaders = []string{"Authorization", "X-Ms-Date", "Date", "X-Ms-Content-Sha256"}

// bodyVar is the request variable that holds the buffered body between
// attempts of one request: reverse_proxy hands each attempt a fresh shallow
// copy of the request, but the variables map is per request.
const bodyVar = "acs_hmac.body"

// RoundTrip signs req and sends it. If the upstream answers 401 and the key
// source then has a different key (a rotation), the request is re-signed and
// replayed once, so a rotation costs the client nothing.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	// The RoundTripper contract: close the request body on every path. What
	// goes upstream is the buffered copy, so the client's body is done with
	// once read (or once refused).
	if req.Body != nil {
		defer req.Body.Close()
	}
	cred, err := t.keys.Credential()
	if err != nil {
		t.logger.Error("refusing request: no access key", zap.Error(err))
		metricSigningFailures.WithLabelValues("key_unavailable").Inc()
		return errorResponse(req, http.StatusServiceUnavailable, "KeyUnavailable",
			"The signing proxy has no ACS access key available; the request was not sent.", 5), nil
	}

	body, err := t.body(req)
	if err != nil {
		if errors.Is(err, errBodyTooLarge) {
			metricSigningFailures.WithLabelValues("body_too_large").Inc()
			return errorResponse(req, http.StatusRequestEntityTooLarge, "RequestBodyTooLarge",
				fmt.Sprintf("The request body is larger than the proxy's max_body_size (%d bytes); the request was not sent.", t.MaxBodySize), 0), nil
		}
		if errors.Is(err, errSpool) {
			t.logger.Error("refusing request: cannot buffer the body", zap.Error(err))
			metricSigningFailures.WithLabelValues("body_spool_failed").Inc()
			return errorResponse(req, http.StatusServiceUnavailable, "BodyBufferUnavailable",
				"The signing proxy could not buffer the request body; the request was not sent.", 0), nil
		}
		metricSigningFailures.WithLabelValues("body_unreadable").Inc()
		return errorResponse(req, http.StatusBadRequest, "RequestBodyUnreadable",
			"The request body could not be read; the request was not sent.", 0), nil
	}

	out, refusal := t.sign(req, cred, body)
	if refusal != nil {
		return refusal, nil
	}
	resp, err := t.HTTPTransport.RoundTrip(out)
	if err != nil || resp.StatusCode != http.StatusUnauthorized {
		return resp, err
	}

	r, ok := t.keys.(Refresher)
	if !ok {
		return resp, nil
	}
	fresh, changed := r.Refresh(req.Context(), cred.Key)
	if !changed {
		metricReplays.WithLabelValues("unchanged").Inc()
		return resp, nil
	}
	out, refusal = t.sign(req, fresh, body)
	if refusal != nil {
		return resp, nil // the 401 is the truer answer
	}
	// Done with the 401: drain a little so the connection can be reused.
	_, _ = io.CopyN(io.Discard, resp.Body, 64<<10)
	resp.Body.Close()
	metricReplays.WithLabelValues("replayed").Inc()
	t.logger.Info("upstream answered 401; replaying once with the rotated key",
		zap.String("key_id", fresh.Key.ID()), zap.String("previous_key_id", cred.Key.ID()))
	return t.HTTPTransport.RoundTrip(out)
}

// sign prepares the outgoing copy of req, signed with cred over body; or it
// returns the refusal to answer with instead.
func (t *Transport) sign(req *http.Request, cred signer.Credential, body *bufferedBody) (*http.Request, *http.Response) {
	// A shallow copy with its own URL and headers: all that signing changes
	// (req.Clone would also deep-copy trailers, forms and more, per attempt).
	out := new(http.Request)
	*out = *req
	u := *req.URL
	out.URL = &u
	out.Header = req.Header.Clone()
	if out.Header == nil {
		out.Header = make(http.Header)
	}
	t.SetScheme(out)

	if cred.Endpoint != nil {
		// The key belongs to one resource: never sign for, or send to, another.
		if !sameOrigin(out, cred.Endpoint) {
			t.logger.Error("refusing request: upstream is not the connection string's endpoint",
				zap.String("upstream", out.URL.Scheme+"://"+out.URL.Host), zap.String("endpoint", cred.Endpoint.String()))
			metricSigningFailures.WithLabelValues("upstream_not_endpoint").Inc()
			return nil, errorResponse(req, http.StatusBadGateway, "UpstreamNotEndpoint",
				"The upstream is not the endpoint of the configured connection string; the request was not sent.", 0)
		}
		out.Host = cred.Endpoint.Host
	} else {
		host := out.Host
		if host == "" {
			host = out.URL.Host
		}
		out.Host = signer.CanonicalHost(out.URL.Scheme, host)
	}

	for _, h := range droppedHeaders {
		delete(out.Header, h)
	}
	out.Trailer = nil // ACS signs no trailers; the body goes out with a Content-Length
	out.ContentLength = body.size
	if body.size == 0 {
		out.Body, out.GetBody = nil, nil
	} else {
		out.Body = io.NopCloser(body.reader())
		out.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(body.reader()), nil }
	}
	delete(out.Header, "Content-Length")
	out.TransferEncoding = nil

	cred.Key.Sign(out.Method, out.URL.RequestURI(), out.Host, body.hash, time.Now()).Apply(out.Header)
	metricRequestsSigned.Inc()

	if c := t.logger.Check(zapcore.DebugLevel, "signed request"); c != nil {
		c.Write(zap.String("method", out.Method), zap.String("host", out.Host),
			zap.Int64("body_bytes", body.size), zap.String("key_id", cred.Key.ID()))
	}
	return out, nil
}

// body returns the request's buffered body, reading it on the first attempt.
func (t *Transport) body(req *http.Request) (*bufferedBody, error) {
	if req.Body == nil || req.Body == http.NoBody {
		return emptyBody, nil // nothing to read, nothing to keep between attempts
	}
	if b, ok := caddyhttp.GetVar(req.Context(), bodyVar).(*bufferedBody); ok {
		return b, nil
	}
	b, err := readBody(req.Body, req.ContentLength, t.MaxBodySize)
	if err != nil {
		return nil, err
	}
	if b.file != nil {
		// A spooled body's file lives until the request is over (every
		// attempt and replay reads it), whichever way it ends.
		context.AfterFunc(req.Context(), b.close)
	}
	caddyhttp.SetVar(req.Context(), bodyVar, b)
	return b, nil
}

// sameOrigin reports whether out is addressed to endpoint's scheme, host and
// port (default ports made explicit on both sides).
func sameOrigin(out *http.Request, endpoint *url.URL) bool {
	if !strings.EqualFold(out.URL.Scheme, endpoint.Scheme) {
		return false
	}
	return hostPort(out.URL.Scheme, out.URL.Host) == hostPort(endpoint.Scheme, endpoint.Host)
}

// hostPort returns "host:port" lower-cased, with the scheme's default port
// when none is given.
func hostPort(scheme, host string) string {
	h, p, err := net.SplitHostPort(host)
	if err != nil {
		h = strings.Trim(host, "[]")
	}
	if p == "" {
		p = "80"
		if strings.EqualFold(scheme, "https") {
			p = "443"
		}
	}
	return net.JoinHostPort(strings.ToLower(h), p)
}

// Interface guards
var (
	_ caddy.Provisioner  = (*Transport)(nil)
	_ caddy.CleanerUpper = (*Transport)(nil)
	_ http.RoundTripper  = (*Transport)(nil)

	_ reverseproxy.TLSTransport                        = (*Transport)(nil)
	_ reverseproxy.H2CTransport                        = (*Transport)(nil)
	_ reverseproxy.RequestHeaderOpsTransport           = (*Transport)(nil)
	_ reverseproxy.HealthCheckSchemeOverriderTransport = (*Transport)(nil)
	_ reverseproxy.ProxyProtocolTransport              = (*Transport)(nil)
)
