package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
)

// TestKeyFileUnauthorizedRereads: key_file parity with Key Vault. The file
// is rotated, ACS already refuses the old key, and the next poll is an hour
// away: the upstream's 401 makes the proxy re-read the file at once and
// replay the request with the new key, so the client sees 200.
func TestKeyFileUnauthorizedRereads(t *testing.T) {
	keyA, keyAB64 := newKey(t)
	keyB, keyBB64 := newKey(t)
	up := newKVUpstream(t, map[string][]byte{"A": keyA, "B": keyB}, "A")
	path := filepath.Join(t.TempDir(), "acs")
	if err := os.WriteFile(path, []byte(keyAB64), 0o600); err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	cfg, err := adapt(fmt.Sprintf("{\n\tadmin off\n\tpersist_config off\n}\nhttp://:%d {\n\tbind 127.0.0.1\n\treverse_proxy %s {\n\t\ttransport acs_hmac {\n\t\t\tkey_file %s\n\t\t}\n\t}\n}\n",
		port, up.srv.Listener.Addr(), path))
	if err != nil {
		t.Fatal(err)
	}
	// JSON only: poll once an hour, so only the 401 can pick up the change
	withPoll := strings.Replace(string(cfg), `"source":"key_file"`, `"poll_interval":"1h","source":"key_file"`, 1)
	if withPoll == string(cfg) {
		t.Fatalf("could not set poll_interval in %s", cfg)
	}
	if err := caddy.Load([]byte(withPoll), true); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = caddy.Stop() })
	c := &caddyInstance{port: port}

	if status, _, body := do(t, "POST", c.url("/sms?id=before"), []byte(`{}`), nil); status != 200 {
		t.Fatalf("before rotation: %d %s", status, body)
	}
	if err := os.WriteFile(path, []byte(keyBB64), 0o600); err != nil {
		t.Fatal(err)
	}
	up.accept("B") // key A regenerated at ACS
	if status, _, body := do(t, "POST", c.url("/sms?id=after"), []byte(`{}`), nil); status != 200 {
		t.Fatalf("after rotation: %d %s; the 401 should have re-read the file and replayed", status, body)
	}
	var after []kvHit
	for _, h := range up.snapshot() {
		if h.id == "after" {
			after = append(after, h)
		}
	}
	if len(after) != 2 || after[0].key != "A" || after[0].status != 401 || after[1].key != "B" || after[1].status != 200 {
		t.Fatalf("want a 401 with key A then a replay with key B, got %+v", after)
	}
}
