package main

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// check is what the upstream's /__bench/check saw (see upstream/main.go).
type check struct {
	Method        string      `json:"method"`
	RequestURI    string      `json:"request_uri"`
	Host          string      `json:"host"`
	Header        http.Header `json:"header"`
	ContentLength int64       `json:"content_length"`
	BodyBytes     int64       `json:"body_bytes"`
	BodySHA256    string      `json:"body_sha256"`
}

// sendCheck sends one request through proxy to the upstream's check endpoint
// and returns what arrived there.
func sendCheck(ctx context.Context, client *http.Client, proxy, method string, body []byte) (*check, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, proxy+"/__bench/check?api-version=2021-03-07", rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s %s: status %d: %s", method, proxy, resp.StatusCode, tail(string(b), 300))
	}
	var c check
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("%s %s: %v", method, proxy, err)
	}
	return &c, nil
}

// checkBody verifies the body arrived intact.
func checkBody(c *check, body []byte) error {
	sum := sha256.Sum256(body)
	want := base64.StdEncoding.EncodeToString(sum[:])
	if c.BodyBytes != int64(len(body)) || c.BodySHA256 != want {
		return fmt.Errorf("upstream got a %d-byte body hashing to %s; sent %d bytes hashing to %s",
			c.BodyBytes, c.BodySHA256, len(body), want)
	}
	return nil
}

// verifySigned checks that a request arrived signed as ACS requires, with
// key, computing the signature here from the published scheme (crypto/hmac,
// not package signer): so the harness never benchmarks an unsigned path.
func verifySigned(c *check, body, key []byte, now time.Time) error {
	if err := checkBody(c, body); err != nil {
		return err
	}
	one := func(name string) (string, error) {
		v := c.Header.Values(name)
		if len(v) != 1 || v[0] == "" {
			return "", fmt.Errorf("want one %s header, got %q", name, v)
		}
		return v[0], nil
	}
	hash, err := one("X-Ms-Content-Sha256")
	if err != nil {
		return err
	}
	if hash != c.BodySHA256 {
		return fmt.Errorf("x-ms-content-sha256 %q, but the body hashes to %q", hash, c.BodySHA256)
	}
	date, err := one("X-Ms-Date")
	if err != nil {
		return err
	}
	t, err := time.Parse(http.TimeFormat, date)
	if err != nil {
		return fmt.Errorf("x-ms-date %q: %v", date, err)
	}
	if d := now.Sub(t); d > 15*time.Minute || d < -15*time.Minute {
		return fmt.Errorf("x-ms-date %q is %v off", date, d)
	}
	auth, err := one("Authorization")
	if err != nil {
		return err
	}
	rest, ok := strings.CutPrefix(auth, "HMAC-SHA256 SignedHeaders=")
	if !ok {
		return fmt.Errorf("authorization %q is not HMAC-SHA256 SignedHeaders=...", auth)
	}
	names, sig, ok := strings.Cut(rest, "&Signature=")
	if !ok {
		return fmt.Errorf("authorization %q has no &Signature=", auth)
	}
	var values []string
	seen := map[string]bool{}
	for n := range strings.SplitSeq(names, ";") {
		n = strings.ToLower(n)
		seen[n] = true
		if n == "host" {
			values = append(values, c.Host)
			continue
		}
		v, err := one(n)
		if err != nil {
			return fmt.Errorf("signed header: %v", err)
		}
		values = append(values, v)
	}
	for _, n := range []string{"x-ms-date", "host", "x-ms-content-sha256"} {
		if !seen[n] {
			return fmt.Errorf("SignedHeaders=%s lacks %s", names, n)
		}
	}
	toSign := strings.ToUpper(c.Method) + "\n" + c.RequestURI + "\n" + strings.Join(values, ";")
	m := hmac.New(sha256.New, key)
	m.Write([]byte(toSign))
	if want := base64.StdEncoding.EncodeToString(m.Sum(nil)); sig != want {
		return fmt.Errorf("signature %q, want %q (wrong key or string to sign)", sig, want)
	}
	return nil
}

// sanityCheck proves, before anything is measured, that the acs_hmac proxy
// signs (GET, a small JSON POST, a large POST) and forwards bodies intact,
// and that the plain proxy forwards without signing.
func sanityCheck(ctx context.Context, plainURL, acsURL string, key []byte) error {
	client := &http.Client{Timeout: 60 * time.Second}
	defer client.CloseIdleConnections()
	small := []byte(`{"from":"+18005550100","smsRecipients":[{"to":"+18005550199"}],"message":"sanity"}`)
	large := make([]byte, 8<<20+13)
	_, _ = rand.Read(large)
	for _, tc := range []struct {
		method string
		body   []byte
	}{{"GET", nil}, {"POST", small}, {"POST", large}} {
		c, err := sendCheck(ctx, client, acsURL, tc.method, tc.body)
		if err == nil {
			err = verifySigned(c, tc.body, key, time.Now())
		}
		if err != nil {
			return fmt.Errorf("acs_hmac proxy, %s with a %d-byte body: %w", tc.method, len(tc.body), err)
		}
	}
	c, err := sendCheck(ctx, client, plainURL, "POST", small)
	if err == nil {
		err = checkBody(c, small)
	}
	if err == nil {
		for _, h := range []string{"Authorization", "X-Ms-Date", "X-Ms-Content-Sha256"} {
			if v := c.Header.Get(h); v != "" {
				err = fmt.Errorf("the plain proxy sent %s: %q", h, v)
			}
		}
	}
	if err != nil {
		return fmt.Errorf("plain proxy: %w", err)
	}
	return nil
}
