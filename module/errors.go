package module

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
)

// errorBody is the ACS error shape: {"error":{"code":"...","message":"..."}}.
type errorBody struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

func errorJSON(code, message string) []byte {
	var e errorBody
	e.Error.Code, e.Error.Message = code, message
	b, _ := json.Marshal(e) // cannot fail: two strings
	return b
}

// writeError answers w with status and an ACS-shaped JSON error.
func writeError(w http.ResponseWriter, status int, code, message string, retryAfter int) {
	b := errorJSON(code, message)
	h := w.Header()
	h.Set("Content-Type", "application/json; charset=utf-8")
	h.Set("Content-Length", strconv.Itoa(len(b)))
	h.Set("Cache-Control", "no-store")
	if retryAfter > 0 {
		h.Set("Retry-After", strconv.Itoa(retryAfter))
	}
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// errorResponse synthesizes the proxy's own answer to req without contacting
// any upstream: for requests that must not be forwarded (fail closed).
func errorResponse(req *http.Request, status int, code, message string, retryAfter int) *http.Response {
	b := errorJSON(code, message)
	h := http.Header{
		"Content-Type":  {"application/json; charset=utf-8"},
		"Cache-Control": {"no-store"},
	}
	if retryAfter > 0 {
		h.Set("Retry-After", strconv.Itoa(retryAfter))
	}
	return &http.Response{
		Status:        strconv.Itoa(status) + " " + http.StatusText(status),
		StatusCode:    status,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        h,
		Body:          io.NopCloser(bytes.NewReader(b)),
		ContentLength: int64(len(b)),
		Request:       req,
	}
}
