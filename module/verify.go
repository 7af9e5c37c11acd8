package module

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/acsproxy/caddy-acs-hmac/signer"
)

func init() {
	caddy.RegisterModule(Verify{})
}

// Verify is an HTTP handler that checks ACS HMAC-SHA256 signatures as the
// service does: the offline stand-in for ACS in local development and tests.
// A request with a missing, malformed, wrong, stale or body-tampered signature
// gets 401 with an ACS-shaped JSON error; a good one goes to the next handler
// with its body intact.
type Verify struct {
	// The key source: one module of the acs_hmac.key_sources namespace.
	KeySourceRaw json.RawMessage `json:"key_source,omitempty" caddy:"namespace=acs_hmac.key_sources inline_key=source"`

	// Largest body read for verification; larger bodies get 413. Default: 32 MiB.
	MaxBodySize int64 `json:"max_body_size,omitempty"`

	// Largest accepted difference between x-ms-date and this server's clock.
	// Default: 15m.
	MaxSkew caddy.Duration `json:"max_skew,omitempty"`

	keys   KeySource
	logger *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (Verify) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.acs_hmac_verify",
		New: func() caddy.Module { return new(Verify) },
	}
}

// Provision sets up the key source.
func (v *Verify) Provision(ctx caddy.Context) error {
	v.logger = ctx.Logger()
	if v.MaxBodySize < 0 {
		return errors.New("acs_hmac_verify: max_body_size must not be negative")
	}
	if v.MaxBodySize == 0 {
		v.MaxBodySize = DefaultMaxBodySize
	}
	if v.MaxSkew < 0 {
		return errors.New("acs_hmac_verify: max_skew must not be negative")
	}
	if v.MaxSkew == 0 {
		v.MaxSkew = caddy.Duration(signer.DefaultMaxSkew)
	}
	keys, err := loadKeySource(ctx, v, v.KeySourceRaw)
	if err != nil {
		return fmt.Errorf("acs_hmac_verify: %w", err)
	}
	v.keys = keys
	return nil
}

// deniedMessage is what ACS answers for a missing or wrong signature.
const deniedMessage = "Denied by the resource provider."

// ServeHTTP verifies the request and passes it on, or answers 401.
func (v *Verify) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	cred, err := v.keys.Credential()
	if err != nil {
		v.logger.Error("no access key to verify with", zap.Error(err))
		writeError(w, http.StatusServiceUnavailable, "KeyUnavailable", "The verifier has no access key available.", 5)
		return nil
	}
	body, err := readBody(r.Body, r.ContentLength, v.MaxBodySize)
	if err != nil {
		if errors.Is(err, errBodyTooLarge) {
			writeError(w, http.StatusRequestEntityTooLarge, "RequestBodyTooLarge", "The request body is larger than max_body_size.", 0)
			return nil
		}
		if errors.Is(err, errSpool) {
			v.logger.Error("cannot buffer the body", zap.Error(err))
			writeError(w, http.StatusServiceUnavailable, "BodyBufferUnavailable", "The verifier could not buffer the request body.", 0)
			return nil
		}
		return caddyhttp.Error(http.StatusBadRequest, errors.New("reading request body failed"))
	}
	if body.file != nil {
		context.AfterFunc(r.Context(), body.close)
	}
	err = cred.Key.Verify(signer.Request{
		Method:       r.Method,
		PathAndQuery: requestTarget(r),
		Host:         r.Host,
		Header:       r.Header,
		ContentHash:  body.hash,
	}, time.Now(), time.Duration(v.MaxSkew))
	if err != nil {
		msg := deniedMessage
		if errors.Is(err, signer.ErrContentMismatch) {
			msg = err.Error()
		}
		v.logger.Info("signature rejected", zap.String("reason", err.Error()), zap.String("method", r.Method), zap.String("host", r.Host))
		writeError(w, http.StatusUnauthorized, "Denied", msg, 0)
		return nil
	}
	r.Body = io.NopCloser(body.reader())
	r.ContentLength = body.size
	return next.ServeHTTP(w, r)
}

// requestTarget is the request-target as received on the wire, before any
// rewrite: what the client signed.
func requestTarget(r *http.Request) string {
	uri := r.RequestURI
	if orig, ok := r.Context().Value(caddyhttp.OriginalRequestCtxKey).(http.Request); ok && orig.RequestURI != "" {
		uri = orig.RequestURI
	}
	if uri == "" || uri[0] != '/' && uri != "*" {
		// absolute-form (RFC 9112 3.2.2): the client signed the path and query
		if u, err := url.ParseRequestURI(uri); err == nil && u.Host != "" {
			return u.RequestURI()
		}
		if uri == "" {
			return r.URL.RequestURI()
		}
	}
	return uri
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Verify)(nil)
	_ caddyhttp.MiddlewareHandler = (*Verify)(nil)
)
