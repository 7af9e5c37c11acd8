package module

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

func TestRequestTarget(t *testing.T) {
	for _, tc := range []struct {
		name       string
		requestURI string // r.RequestURI
		url        string // r.URL (after any rewrite)
		orig       *string
		want       string
	}{
		{name: "origin-form", requestURI: "/sms?api-version=2021-03-07", url: "/sms?api-version=2021-03-07", want: "/sms?api-version=2021-03-07"},
		{name: "origin-form, escapes kept", requestURI: "/a%2Fb/c%20d?q=a%20b&r=+", url: "/a%2Fb/c%20d?q=a%20b&r=+", want: "/a%2Fb/c%20d?q=a%20b&r=+"},
		{name: "origin-form, empty query kept", requestURI: "/p?", url: "/p?", want: "/p?"},
		{name: "absolute-form", requestURI: "http://h/p?q", url: "http://h/p?q", want: "/p?q"},
		{name: "absolute-form https with port", requestURI: "https://h.example:8443/a%2Fb?x=%20", url: "https://h.example:8443/a%2Fb?x=%20", want: "/a%2Fb?x=%20"},
		{name: "absolute-form, no path", requestURI: "http://h", url: "http://h", want: "/"},
		{name: "asterisk", requestURI: "*", url: "*", want: "*"},
		{name: "no RequestURI: from URL", requestURI: "", url: "/from/url?x=1", want: "/from/url?x=1"},
		{name: "original request wins over a rewrite", requestURI: "/rewritten?y=2", url: "/rewritten?y=2", orig: new("/orig?x=1"), want: "/orig?x=1"},
		{name: "original absolute-form wins", requestURI: "/rewritten", url: "/rewritten", orig: new("http://h/orig?z"), want: "/orig?z"},
		{name: "original with empty RequestURI is ignored", requestURI: "/current", url: "/current", orig: new(""), want: "/current"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "/", nil)
			u, err := url.ParseRequestURI(tc.url)
			if err != nil && tc.url != "*" {
				t.Fatal(err)
			}
			if tc.url == "*" {
				u = &url.URL{Path: "*"}
			}
			r.URL = u
			r.RequestURI = tc.requestURI
			if tc.orig != nil {
				origURL, _ := url.Parse("/")
				orig := http.Request{Method: http.MethodGet, RequestURI: *tc.orig, URL: origURL}
				r = r.WithContext(context.WithValue(r.Context(), caddyhttp.OriginalRequestCtxKey, orig))
			}
			if got := requestTarget(r); got != tc.want {
				t.Errorf("requestTarget = %q, want %q", got, tc.want)
			}
		})
	}
}
