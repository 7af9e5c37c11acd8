package module

import (
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
)

// Messages with characters JSON must escape.
var utErrorCases = []struct {
	status     int
	code, msg  string
	retryAfter int
}{
	{http.StatusServiceUnavailable, "KeyUnavailable", "The signing proxy has no ACS access key available; the request was not sent.", 5},
	{http.StatusRequestEntityTooLarge, "RequestBodyTooLarge", "larger than 32 bytes", 0},
	{http.StatusBadGateway, "UpstreamNotEndpoint", `quote " backslash \ newline` + "\n tab\t <html>&amp; unicode é 😀", 0},
	{http.StatusUnauthorized, "Denied", "Request 'x-ms-content-sha256' differs from generated content hash.", -1},
	{http.StatusTooManyRequests, "7509", "", 120},
}

func TestErrorResponse(t *testing.T) {
	for _, tc := range utErrorCases {
		t.Run(tc.code, func(t *testing.T) {
			req := httptest.NewRequest(http.MethodPost, "http://localhost/x", nil)
			resp := errorResponse(req, tc.status, tc.code, tc.msg, tc.retryAfter)
			body := utReadResponse(t, resp)
			if resp.StatusCode != tc.status {
				t.Errorf("StatusCode %d", resp.StatusCode)
			}
			if want := strconv.Itoa(tc.status) + " " + http.StatusText(tc.status); resp.Status != want {
				t.Errorf("Status %q, want %q", resp.Status, want)
			}
			if resp.ProtoMajor != 1 || resp.ProtoMinor != 1 || resp.Proto != "HTTP/1.1" {
				t.Errorf("Proto %q %d.%d", resp.Proto, resp.ProtoMajor, resp.ProtoMinor)
			}
			if resp.Request != req {
				t.Error("Request is not req")
			}
			if resp.ContentLength != int64(len(body)) {
				t.Errorf("ContentLength %d, body %d bytes", resp.ContentLength, len(body))
			}
			if code, msg := utDecodeError(t, body); code != tc.code || msg != tc.msg {
				t.Errorf("decoded code %q message %q, want %q %q", code, msg, tc.code, tc.msg)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/json; charset=utf-8" {
				t.Errorf("Content-Type %q", ct)
			}
			if cc := resp.Header.Get("Cache-Control"); cc != "no-store" {
				t.Errorf("Cache-Control %q", cc)
			}
			ra, has := resp.Header["Retry-After"]
			switch {
			case tc.retryAfter > 0 && (len(ra) != 1 || ra[0] != strconv.Itoa(tc.retryAfter)):
				t.Errorf("Retry-After %q, want %d", ra, tc.retryAfter)
			case tc.retryAfter <= 0 && has:
				t.Errorf("Retry-After %q with retryAfter %d", ra, tc.retryAfter)
			}
			// The response must survive being written by reverse_proxy/httputil.
			var sb strings.Builder
			if err := errorResponse(req, tc.status, tc.code, tc.msg, tc.retryAfter).Write(&sb); err != nil {
				t.Errorf("Response.Write: %v", err)
			}
		})
	}
}

func TestWriteError(t *testing.T) {
	for _, tc := range utErrorCases {
		t.Run(tc.code, func(t *testing.T) {
			w := httptest.NewRecorder()
			writeError(w, tc.status, tc.code, tc.msg, tc.retryAfter)
			res := w.Result()
			body := utReadResponse(t, res)
			if res.StatusCode != tc.status {
				t.Errorf("status %d", res.StatusCode)
			}
			if cl := res.Header.Get("Content-Length"); cl != strconv.Itoa(len(body)) {
				t.Errorf("Content-Length %q, body %d bytes", cl, len(body))
			}
			if code, msg := utDecodeError(t, body); code != tc.code || msg != tc.msg {
				t.Errorf("decoded code %q message %q, want %q %q", code, msg, tc.code, tc.msg)
			}
			if ct := res.Header.Get("Content-Type"); ct != "application/json; charset=utf-8" {
				t.Errorf("Content-Type %q", ct)
			}
			if cc := res.Header.Get("Cache-Control"); cc != "no-store" {
				t.Errorf("Cache-Control %q", cc)
			}
			ra, has := res.Header["Retry-After"]
			switch {
			case tc.retryAfter > 0 && (len(ra) != 1 || ra[0] != strconv.Itoa(tc.retryAfter)):
				t.Errorf("Retry-After %q, want %d", ra, tc.retryAfter)
			case tc.retryAfter <= 0 && has:
				t.Errorf("Retry-After %q with retryAfter %d", ra, tc.retryAfter)
			}
		})
	}
}
