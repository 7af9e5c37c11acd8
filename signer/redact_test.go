package signer_test

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"strconv"
	"strings"
	"testing"

	"github.com/acsproxy/caddy-acs-hmac/signer"
)

// redactRaw is the secret used by the redaction tests: 32 bytes whose
// encodings are easy to spot.
var redactRaw = []byte{
	0x5e, 0xc2, 0x3b, 0x91, 0xa4, 0x7d, 0x18, 0xe6, 0x29, 0xfa, 0x43, 0xb7, 0x6c, 0x0d, 0xd8, 0x52,
	0x9e, 0x31, 0x7a, 0xe4, 0x05, 0xbb, 0x66, 0xf1, 0x2c, 0x88, 0x4f, 0x13, 0xa9, 0xde, 0x70, 0x37,
}

// forbidden returns every text that would reveal raw: its base64 (all four
// alphabets), hex (both cases), the bytes themselves, their Go-quoted and
// decimal forms, and windows of each long enough to identify the key.
func forbidden(raw []byte) []string {
	full := []string{
		base64.StdEncoding.EncodeToString(raw),
		base64.RawStdEncoding.EncodeToString(raw),
		base64.URLEncoding.EncodeToString(raw),
		base64.RawURLEncoding.EncodeToString(raw),
		hex.EncodeToString(raw),
		strings.ToUpper(hex.EncodeToString(raw)),
		string(raw),
		strconv.Quote(string(raw)),
		fmt.Sprintf("% x", raw),
	}
	var out []string
	for _, s := range full {
		const w = 10
		if len(s) <= w {
			out = append(out, s)
			continue
		}
		for i := 0; i+w <= len(s); i++ {
			out = append(out, s[i:i+w])
		}
	}
	for i := 0; i+4 <= len(raw); i++ { // decimal byte lists, as %d / %v print []byte
		var parts []string
		for _, b := range raw[i : i+4] {
			parts = append(parts, strconv.Itoa(int(b)))
		}
		out = append(out, strings.Join(parts, " "), strings.Join(parts, ", "))
	}
	return out
}

func assertRedacted(t *testing.T, what, out string, raw []byte) {
	t.Helper()
	if f := leak(out, raw); f != "" {
		t.Errorf("%s = %q reveals key material %q", what, out, f)
	}
}

// leak returns the first forbidden text found in out, also after collapsing
// runs of spaces (a width flag pads each byte of a printed []byte).
func leak(out string, raw []byte) string {
	collapsed := strings.Join(strings.Fields(out), " ")
	for _, f := range forbidden(raw) {
		if strings.Contains(out, f) || strings.Contains(collapsed, f) {
			return f
		}
	}
	return ""
}

type exportedHolder struct {
	Name string
	Key  *signer.Key
}

type unexportedHolder struct {
	name string
	key  *signer.Key
}

type credHolder struct {
	Cred  signer.Credential
	PCred *signer.Credential
	cred  signer.Credential
}

func TestKeyRedaction(t *testing.T) {
	k, err := signer.ParseKey(base64.StdEncoding.EncodeToString(redactRaw))
	if err != nil {
		t.Fatal(err)
	}
	cred, err := signer.ParseConnectionString("endpoint=https://res.communication.azure.com/;accesskey=" + base64.StdEncoding.EncodeToString(redactRaw))
	if err != nil {
		t.Fatal(err)
	}
	bare := signer.Credential{Key: k}

	values := map[string]any{
		"*Key":                     k,
		"exported holder":          exportedHolder{"n", k},
		"*exported holder":         &exportedHolder{"n", k},
		"unexported holder":        unexportedHolder{"n", k},
		"*unexported holder":       &unexportedHolder{"n", k},
		"[]*Key":                   []*signer.Key{k, k},
		"map[string]*Key":          map[string]*signer.Key{"a": k},
		"Credential":               cred,
		"*Credential":              &cred,
		"bare Credential":          bare,
		"credential holder":        credHolder{Cred: cred, PCred: &cred, cred: cred},
		"*credential holder":       &credHolder{Cred: cred, PCred: &cred, cred: bare},
		"[]Credential":             []signer.Credential{cred, bare},
		"any-wrapped key in slice": []any{k, cred},
	}
	verbs := []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%10.3v", "%-40s", "% x", "%#x", "%T", "%t", "%p"}
	for name, v := range values {
		for _, verb := range verbs {
			if unexportedKeyField[name] && !pointerVerbs[verb] {
				continue // see TestKeyRedactionUnexportedFieldBadVerb
			}
			assertRedacted(t, name+" "+verb, fmt.Sprintf(verb, v), redactRaw)
		}
		assertRedacted(t, name+" Sprint", fmt.Sprint(v), redactRaw)
		assertRedacted(t, name+" Sprintln", fmt.Sprintln(v), redactRaw)
		assertRedacted(t, name+" Errorf", fmt.Errorf("wrapped: %v: %w", v, errors.New("x")).Error(), redactRaw)

		var buf bytes.Buffer
		fmt.Fprintln(&buf, "println:", v)
		fmt.Fprint(&buf, v)
		log.New(&buf, "", 0).Println(v)
		log.New(&buf, "", 0).Printf("%+v", v)
		assertRedacted(t, name+" Println/log", buf.String(), redactRaw)

		if j, err := json.Marshal(v); err == nil {
			assertRedacted(t, name+" json", string(j), redactRaw)
		}
	}

	// The redacted forms say so.
	for _, s := range []string{fmt.Sprint(k), fmt.Sprintf("%#v", k), k.String(), k.GoString()} {
		if !strings.Contains(s, "REDACTED") {
			t.Errorf("key prints as %q, want a REDACTED marker", s)
		}
	}
	if txt, err := k.MarshalText(); err != nil || !strings.Contains(string(txt), "REDACTED") {
		t.Errorf("MarshalText = %q, %v", txt, err)
	}
	if s := cred.String(); !strings.Contains(s, "REDACTED") || !strings.Contains(s, "res.communication.azure.com") {
		t.Errorf("Credential.String() = %q, want endpoint and REDACTED", s)
	}
	if cred.GoString() != cred.String() || !strings.Contains(bare.String(), "REDACTED") {
		t.Errorf("Credential GoString/String = %q / %q / %q", cred.GoString(), cred.String(), bare.String())
	}
	var nilKey *signer.Key
	assertRedacted(t, "nil key", fmt.Sprintf("%v %+v %#v", nilKey, nilKey, nilKey), redactRaw)
}

// Values that reach a *Key only through an unexported field, where fmt cannot
// call the Key's methods.
var unexportedKeyField = map[string]bool{
	"unexported holder": true, "*unexported holder": true,
	"credential holder": true, "*credential holder": true,
}

// Verbs fmt accepts for a pointer (it prints the address, not the target).
var pointerVerbs = map[string]bool{
	"%v": true, "%+v": true, "%#v": true, "%x": true, "%X": true, "%d": true,
	"%10.3v": true, "% x": true, "%#x": true, "%T": true, "%p": true,
}

// TestKeyRedactionUnexportedFieldBadVerb: when a *Key sits in an unexported
// struct field, fmt cannot call its Format/String methods. With a verb that
// is invalid for a pointer (%s, %q, %t, ...) fmt reports "%!s(*signer.Key=...)"
// and prints the pointed-to struct with reflection at depth 0, which walks
// Key.secret and prints the raw key bytes in decimal. The secret should sit
// behind a further pointer (or otherwise out of reflection's reach at depth 1)
// so that this prints an address only.
func TestKeyRedactionUnexportedFieldBadVerb(t *testing.T) {
	k, err := signer.NewKey(redactRaw)
	if err != nil {
		t.Fatal(err)
	}
	cred := signer.Credential{Key: k}
	var leaks []string
	for _, v := range []any{unexportedHolder{"n", k}, &unexportedHolder{"n", k}, credHolder{cred: cred}} {
		for _, verb := range []string{"%s", "%q", "%-40s", "%t", "%e", "%c", "%U"} {
			out := fmt.Sprintf(verb, v)
			if f := leak(out, redactRaw); f != "" {
				leaks = append(leaks, fmt.Sprintf("Sprintf(%q, %T) = %s", verb, v, out))
			}
		}
	}
	if len(leaks) > 0 {
		t.Errorf("key bytes printed in %d cases, e.g.\n%s", len(leaks), leaks[0])
	}
}

// TestRedactionSelfCheck makes sure the detector would catch a leak.
func TestRedactionSelfCheck(t *testing.T) {
	leaks := []string{
		fmt.Sprint(redactRaw),
		fmt.Sprintf("%x", redactRaw),
		fmt.Sprintf("%X", redactRaw),
		fmt.Sprintf("%q", redactRaw),
		base64.StdEncoding.EncodeToString(redactRaw),
		base64.RawURLEncoding.EncodeToString(redactRaw[3:20]),
		fmt.Sprintf("%v", struct{ s []byte }{redactRaw}),
	}
	for _, l := range leaks {
		found := false
		for _, f := range forbidden(redactRaw) {
			if strings.Contains(l, f) {
				found = true
				break
			}
		}
		if !found {
			t.Errorf("detector misses leak %q", l)
		}
	}
}

func TestKeyID(t *testing.T) {
	b64 := base64.StdEncoding.EncodeToString(redactRaw)
	k1, _ := signer.ParseKey(b64)
	k2, _ := signer.NewKey(append([]byte(nil), redactRaw...))
	c, err := signer.ParseCredential("endpoint=https://x.communication.azure.com;accesskey=" + b64)
	if err != nil {
		t.Fatal(err)
	}
	if k1.ID() == "" || k1.ID() != k2.ID() || k1.ID() != c.Key.ID() || k1.ID() != k1.ID() {
		t.Errorf("IDs of equal keys differ: %q %q %q", k1.ID(), k2.ID(), c.Key.ID())
	}
	assertRedacted(t, "ID", k1.ID(), redactRaw)

	// Different keys, including ones differing in one bit or in length, get
	// different IDs.
	seen := map[string][]byte{k1.ID(): redactRaw}
	var keys [][]byte
	for i := range 256 { // every single-bit flip
		raw := append([]byte(nil), redactRaw...)
		raw[i%len(raw)] ^= byte(1 << (i / len(raw)))
		keys = append(keys, raw)
	}
	for n := 1; n < len(redactRaw); n++ { // every proper prefix
		keys = append(keys, redactRaw[:n])
	}
	for i := range 1000 { // and a few more
		keys = append(keys, append(redactRaw[:16:16], strconv.Itoa(i)...))
	}
	for _, raw := range keys {
		k := mustNewKey(t, raw)
		if prev, dup := seen[k.ID()]; dup {
			t.Errorf("keys %x and %x share ID %q", prev, raw, k.ID())
		}
		seen[k.ID()] = raw
		if len(raw) >= 16 {
			assertRedacted(t, "ID", k.ID(), raw)
		}
		if b := base64.StdEncoding.EncodeToString(raw); len(b) >= 8 && strings.Contains(k.ID(), b) {
			t.Errorf("ID %q contains the key", k.ID())
		}
	}
}

// TestKeyIDHMACEquivalentKeys documents that keys differing only by trailing
// zero bytes (up to the 64-byte HMAC block) are the same HMAC key: they sign
// identically and share an ID, though Equal (a byte comparison) tells them
// apart.
func TestKeyIDHMACEquivalentKeys(t *testing.T) {
	a := mustNewKey(t, []byte{0xa7})
	b := mustNewKey(t, []byte{0xa7, 0, 0})
	if a.Equal(b) {
		t.Error("Equal compares bytes; these differ")
	}
	if a.ID() != b.ID() {
		t.Errorf("HMAC-equivalent keys have IDs %q and %q", a.ID(), b.ID())
	}
	if a.Signature("GET", "/", "d", "h", "c") != b.Signature("GET", "/", "d", "h", "c") {
		t.Error("HMAC-equivalent keys sign differently")
	}
}

func mustNewKey(t *testing.T, raw []byte) *signer.Key {
	t.Helper()
	k, err := signer.NewKey(raw)
	if err != nil {
		t.Fatal(err)
	}
	return k
}
