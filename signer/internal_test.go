package signer

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"strings"
	"sync"
	"testing"
)

// TestHMACVectors checks the published HMAC vectors against the pooled MAC.
// The key is the base64-decoded bytes of "pw==" (a single byte 0xa7), not
// the text.
func TestHMACVectors(t *testing.T) {
	k, err := ParseKey("pw==")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(k.secret.b, []byte{0xa7}) {
		t.Fatalf("decoded key = %x, want a7", k.secret.b)
	}
	tests := []struct {
		name string
		msg  string
		want string
	}{
		{"banana", "banana", "88EC05aAS9iXnaimtNO78JLjiPtfWryQB/5QYEzEsu8="},
		{"emoji", "😀", "1rudJKjn2Zi+3hRrBG29wIF6pD6YyAeQR1ZcFtXoKAU="},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// Twice, so the second call runs on a pooled (Reset) state.
			for i := range 2 {
				got := base64.StdEncoding.EncodeToString(k.mac(nil, []byte(tc.msg)))
				if got != tc.want {
					t.Errorf("call %d: HMAC(pw==, %q) = %q, want %q", i, tc.msg, got, tc.want)
				}
			}
			// mac appends to dst.
			out := k.mac([]byte("prefix"), []byte(tc.msg))
			if !bytes.HasPrefix(out, []byte("prefix")) || base64.StdEncoding.EncodeToString(out[6:]) != tc.want {
				t.Errorf("mac(dst) = %x, want prefix + vector", out)
			}
		})
	}
	// Using the text "pw==" as the key would give a different answer.
	m := hmac.New(sha256.New, []byte("pw=="))
	m.Write([]byte("banana"))
	if base64.StdEncoding.EncodeToString(m.Sum(nil)) == "88EC05aAS9iXnaimtNO78JLjiPtfWryQB/5QYEzEsu8=" {
		t.Fatal("vector does not distinguish key text from key bytes")
	}
}

// TestAppendStringToSignMatches checks the allocation-free builder used for
// signing against the exported StringToSign.
func TestAppendStringToSignMatches(t *testing.T) {
	cases := [][5]string{
		{"GET", "/testPath?testQuery=test", "Wed, 13 Apr 2022 18:09:12 GMT", "example.com", EmptyContentHash},
		{"post", "/emails:send?api-version=2023-03-31", "d", "h:8443", "x"},
		{"mKcOl", "/caf%C3%A9?q=a+b", "", "", ""},
		{"", "", "", "", ""},
		{"GET", "/" + strings.Repeat("a", 2000), "d", "h", "c"}, // larger than the pooled buffer
	}
	for _, c := range cases {
		want := StringToSign(c[0], c[1], c[2], c[3], c[4])
		got := string(appendStringToSign(nil, c[0], c[1], c[2], c[3], c[4]))
		if got != want {
			t.Errorf("appendStringToSign(%q) = %q, want %q", c, got, want)
		}
	}
}

// TestStringToSignNonASCIIMethod: StringToSign is documented as the exact
// string that is signed, even for a method that is not an ASCII token.
func TestStringToSignNonASCIIMethod(t *testing.T) {
	for _, m := range []string{"g\u00e9t", "g\xffet", "\u017fend"} {
		want := string(appendStringToSign(nil, m, "/", "d", "h", "c"))
		if got := StringToSign(m, "/", "d", "h", "c"); got != want {
			t.Errorf("StringToSign(%q, ...) = %q but the signed bytes are %q", m, got, want)
		}
	}
}

// TestSignatureBufferReuse checks that the pooled scratch buffer and MAC
// states give the same answers under concurrent use, including after a
// buffer has grown past its initial capacity.
func TestSignatureBufferReuse(t *testing.T) {
	k, err := NewKey([]byte("0123456789abcdef0123456789abcdef"))
	if err != nil {
		t.Fatal(err)
	}
	long := "/" + strings.Repeat("x", 4096)
	ref := func(method, path string) string {
		m := hmac.New(sha256.New, []byte("0123456789abcdef0123456789abcdef"))
		m.Write([]byte(StringToSign(method, path, "d", "h", "c")))
		return base64.StdEncoding.EncodeToString(m.Sum(nil))
	}
	wantShort, wantLong := ref("GET", "/s"), ref("GET", long)
	var wg sync.WaitGroup
	errs := make(chan string, 16)
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				path, want := "/s", wantShort
				if (i+g)%3 == 0 {
					path, want = long, wantLong
				}
				if got := k.Signature("GET", path, "d", "h", "c"); got != want {
					errs <- got
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Errorf("concurrent Signature gave %q", e)
	}
}

func TestKeyIDInternal(t *testing.T) {
	k, _ := NewKey([]byte{1, 2, 3})
	if len(k.ID()) != 8 {
		t.Errorf("ID() = %q, want 8 characters", k.ID())
	}
	if strings.Contains(k.ID(), base64.StdEncoding.EncodeToString(k.secret.b)) {
		t.Errorf("ID() contains the key")
	}
}
