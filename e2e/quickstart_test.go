package e2e

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
)

// TestQuickstart runs examples/quickstart/Caddyfile as the README tells a
// newcomer to (only its two ports moved to free ones) and sends the README's
// curl request: it must come back verified.
func TestQuickstart(t *testing.T) {
	raw, err := os.ReadFile("../examples/quickstart/Caddyfile")
	if err != nil {
		t.Fatal(err)
	}
	proxyPort, acsPort := freePort(t), freePort(t)
	cf := strings.NewReplacer(
		"localhost:8080", fmt.Sprintf("localhost:%d", proxyPort),
		"localhost:8081", fmt.Sprintf("localhost:%d", acsPort),
	).Replace(string(raw))
	if cf == string(raw) {
		t.Fatal("the quickstart no longer uses ports 8080 and 8081; update this test and the README")
	}
	cfg, err := adapt(cf)
	if err != nil {
		t.Fatal(err)
	}
	if err := caddy.Load(cfg, true); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = caddy.Stop() })

	url := fmt.Sprintf("http://localhost:%d/sms?api-version=2021-03-07", proxyPort)
	status, _, body := do(t, "POST", url, []byte(`{"message":"hi"}`), nil)
	if status != 202 || string(body) != `{"verified":true}` {
		t.Fatalf("quickstart request: %d %s", status, body)
	}
	// and the stand-in really checks: straight to it, unsigned, is refused
	status, _, _ = do(t, "POST", fmt.Sprintf("http://localhost:%d/sms?api-version=2021-03-07", acsPort), []byte(`{"message":"hi"}`), nil)
	if status != 401 {
		t.Fatalf("unsigned request to the stand-in: %d, want 401", status)
	}
}
