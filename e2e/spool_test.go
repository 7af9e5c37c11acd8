package e2e

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// openSpoolFiles counts this process's open descriptors on spooled bodies.
func openSpoolFiles(t *testing.T) int {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, fd := range fds {
		if target, err := os.Readlink(filepath.Join("/proc/self/fd", fd.Name())); err == nil && strings.Contains(target, "caddy-acs-hmac-body") {
			n++
		}
	}
	return n
}

// TestLargeBodiesSpooledAndReleased: bodies above the threshold go through a
// temporary file that is never visible in the directory and is released on
// every path: success, a client that aborts mid-upload, and a 413.
func TestLargeBodiesSpooledAndReleased(t *testing.T) {
	spoolDir := t.TempDir()
	t.Setenv("TMPDIR", spoolDir)
	key, keyB64 := newKey(t)
	up := newUpstream(t, false)
	c := startCaddy(t, fmt.Sprintf(`reverse_proxy %s {
		transport acs_hmac {
			access_key %s
			max_body_size 6MiB
		}
	}`, up.addr(), keyB64))

	body := randomBytes(t, 5<<20)
	status, _, _ := do(t, "POST", c.url("/emails:send"), body, nil)
	if status != 200 {
		t.Fatalf("status %d", status)
	}
	if err := independentVerify(key, up.requests()[0], time.Now()); err != nil {
		t.Fatal(err)
	}

	// a client that sends half of a declared 5 MiB body and hangs up
	conn, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", c.port))
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(conn, "POST /emails:send HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", len(body))
	_, _ = conn.Write(body[:len(body)/2])
	time.Sleep(100 * time.Millisecond)
	conn.Close()

	// too large, found out while spooling (no Content-Length)
	big := randomBytes(t, 7<<20)
	rawResp := rawRequest(t, fmt.Sprintf("127.0.0.1:%d", c.port),
		"POST /emails:send HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"+fmt.Sprintf("%x\r\n", len(big)), append(big, []byte("\r\n0\r\n\r\n")...))
	if rawResp.StatusCode != 413 {
		t.Fatalf("chunked 7MiB: status %d, want 413", rawResp.StatusCode)
	}

	deadline := time.Now().Add(5 * time.Second)
	for openSpoolFiles(t) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d spool files still open after all requests ended", openSpoolFiles(t))
		}
		time.Sleep(20 * time.Millisecond)
	}
	if es, _ := os.ReadDir(spoolDir); len(es) != 0 {
		t.Fatalf("%d files left in the spool directory", len(es))
	}
	if n := len(up.requests()); n != 1 {
		t.Errorf("upstream got %d requests, want 1 (the aborted and the oversize ones must not reach it)", n)
	}
}
