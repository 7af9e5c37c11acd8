package module

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"io"
	"net/http"
	"os"
	"testing"
	"testing/iotest"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// withSpoolThreshold lowers the spool threshold for one test.
func withSpoolThreshold(t *testing.T, n int64) {
	t.Helper()
	old := spoolThreshold
	spoolThreshold = n
	t.Cleanup(func() { spoolThreshold = old })
}

// spoolDir points temporary files at a fresh directory and returns it.
func spoolDir(t *testing.T) string {
	t.Helper()
	d := t.TempDir()
	t.Setenv("TMPDIR", d)
	return d
}

func dirEntries(t *testing.T, d string) int {
	t.Helper()
	es, err := os.ReadDir(d)
	if err != nil {
		t.Fatal(err)
	}
	return len(es)
}

// TestReadBodySpools: bodies over the threshold go to an unlinked temporary
// file (nothing is ever visible in the directory), hash the same, replay
// identically any number of times, and release the file on close.
func TestReadBodySpools(t *testing.T) {
	withSpoolThreshold(t, 64<<10)
	dir := spoolDir(t)
	data := make([]byte, 300<<10+7)
	if _, err := rand.Read(data); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	want := base64.StdEncoding.EncodeToString(sum[:])

	for _, tc := range []struct {
		name string
		r    io.Reader
		cl   int64
	}{
		{"known length", bytes.NewReader(data), int64(len(data))},
		{"unknown length", io.MultiReader(bytes.NewReader(data)), -1},
		{"understated length", iotest.HalfReader(bytes.NewReader(data)), 10},
		{"one byte at a time", iotest.OneByteReader(bytes.NewReader(data)), -1},
	} {
		b, err := readBody(tc.r, tc.cl, 1<<20)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if b.file == nil || b.data != nil {
			t.Fatalf("%s: not spooled", tc.name)
		}
		if b.hash != want || b.size != int64(len(data)) {
			t.Errorf("%s: hash %s size %d", tc.name, b.hash, b.size)
		}
		if n := dirEntries(t, dir); n != 0 {
			t.Errorf("%s: %d files visible in the spool directory while in use", tc.name, n)
		}
		for i := range 2 {
			got, err := io.ReadAll(b.reader())
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("%s: replay %d differs (%v)", tc.name, i, err)
			}
		}
		fd := b.file.Fd()
		b.close()
		b.close() // idempotent
		if _, err := os.Stat("/proc/self/fd/" + itoa(fd)); err == nil {
			// the descriptor number may have been reused; check it is not our file
			if target, _ := os.Readlink("/proc/self/fd/" + itoa(fd)); bytesContains(target, "caddy-acs-hmac-body") {
				t.Errorf("%s: spool file still open after close", tc.name)
			}
		}
	}
}

// TestReadBodySpoolLimits: the max still applies past the threshold, before
// and while spooling, and a failed spool leaves nothing behind.
func TestReadBodySpoolLimits(t *testing.T) {
	withSpoolThreshold(t, 1<<10)
	dir := spoolDir(t)
	data := make([]byte, 10<<10)
	for _, tc := range []struct {
		name string
		r    io.Reader
		cl   int64
	}{
		{"declared", bytes.NewReader(data), int64(len(data))},
		{"unknown", io.MultiReader(bytes.NewReader(data)), -1},
		{"understated", bytes.NewReader(data), 2 << 10},
	} {
		if _, err := readBody(tc.r, tc.cl, 8<<10); !errors.Is(err, errBodyTooLarge) {
			t.Errorf("%s: %v, want errBodyTooLarge", tc.name, err)
		}
	}
	// exactly the max passes
	b, err := readBody(bytes.NewReader(data[:8<<10]), -1, 8<<10)
	if err != nil || b.size != 8<<10 {
		t.Fatalf("at the max: %v", err)
	}
	b.close()
	if n := dirEntries(t, dir); n != 0 {
		t.Errorf("%d files left in the spool directory", n)
	}
}

// TestReadBodySpoolFailure: an unwritable temporary directory is errSpool,
// which the transport answers with 503, not a silent pass.
func TestReadBodySpoolFailure(t *testing.T) {
	withSpoolThreshold(t, 1<<10)
	t.Setenv("TMPDIR", "/nonexistent/caddy-acs-hmac-test")
	_, err := readBody(bytes.NewReader(make([]byte, 4<<10)), 4<<10, 1<<20)
	if !errors.Is(err, errSpool) {
		t.Fatalf("%v, want errSpool", err)
	}
}

// TestSpoolFileClosedWhenContextEnds: the transport ties the file behind a
// spooled body to the request's context; ending it closes the file.
func TestSpoolFileClosedWhenContextEnds(t *testing.T) {
	withSpoolThreshold(t, 1<<10)
	spoolDir(t)
	ctx, cancel := context.WithCancel(context.WithValue(context.Background(), caddyhttp.VarsCtxKey, map[string]any{}))
	req, _ := http.NewRequestWithContext(ctx, "POST", "http://h/", bytes.NewReader(make([]byte, 4<<10)))
	tr := &Transport{MaxBodySize: 1 << 20}
	b, err := tr.body(req)
	if err != nil {
		t.Fatal(err)
	}
	if b.file == nil {
		t.Fatal("not spooled")
	}
	if _, err := b.file.Stat(); err != nil {
		t.Fatal("the spool file was closed while the request was still going")
	}
	cancel()
	for start := time.Now(); ; time.Sleep(time.Millisecond) {
		if _, err := b.file.Stat(); err != nil {
			return // Stat on a closed file fails: the AfterFunc ran
		}
		if time.Since(start) > 5*time.Second {
			t.Fatal("the spool file was not closed when the context ended")
		}
	}
}

func itoa(u uintptr) string {
	var b [20]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + u%10)
		u /= 10
		if u == 0 {
			return string(b[i:])
		}
	}
}

func bytesContains(s, sub string) bool { return bytes.Contains([]byte(s), []byte(sub)) }
