package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestHarnessShort runs the whole harness end to end in -short mode: builds
// (or, with BENCH_CADDY set, reuses) the Caddy binary, starts the upstream and
// both proxies as processes, checks the signing path, runs every workload
// against both targets with a few requests each, and prints the table. It
// checks correctness only, never timing: every request answered 2xx by both
// targets and served by the upstream, and the table has every row.
func TestHarnessShort(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the harness measures RSS through Linux's /proc")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	t.Cleanup(cancel)
	h := newHarness(t.TempDir(), false)
	t.Cleanup(h.Close) // runs before TempDir's removal: children die first

	var out, progress bytes.Buffer
	start := time.Now()
	rep, err := run(ctx, h, options{Short: true, Conc: 16, MemConc: 64, Caddy: os.Getenv("BENCH_CADDY")}, &out, &progress)
	t.Logf("harness ran in %v", time.Since(start).Round(time.Millisecond))
	if err != nil {
		t.Fatalf("%v\nprogress:\n%s", err, progress.String())
	}
	t.Logf("\n%s", out.String())

	if got, want := len(rep.Cells), 2*len(workloads); got != want {
		t.Fatalf("%d cells, want %d", got, want)
	}
	for i, c := range rep.Cells {
		wl := workloads[i/2]
		if c.Workload != wl.Name || c.Target != targets[i%2] {
			t.Errorf("cell %d is %s/%s, want %s/%s", i, c.Workload, c.Target, wl.Name, targets[i%2])
		}
		wantN := wl.ShortN
		if wl.Mem {
			wantN = 64
		}
		if len(c.Runs) != 1 || c.Requests != wantN || c.Failed != 0 {
			t.Errorf("%s/%s: %d runs, %d requests (want %d), %d failed: %+v", c.Workload, c.Target, len(c.Runs), c.Requests, wantN, c.Failed, c.Runs)
		}
		if c.RPS <= 0 || c.P99 <= 0 || c.PeakKiB <= 0 {
			t.Errorf("%s/%s: empty figures: %+v", c.Workload, c.Target, c)
		}
	}
	if len(rep.Failures) > 0 {
		t.Errorf("failures: %q", rep.Failures)
	}

	// The printed table has a row per workload and target, ratios on the
	// acs_hmac rows.
	lines := strings.Split(out.String(), "\n")
	for _, wl := range workloads {
		for _, target := range targets {
			found := false
			for _, l := range lines {
				if strings.HasPrefix(l, wl.Name+" ") && strings.Fields(l[22:])[0] == target {
					found = true
					if target == "acs_hmac" && len(strings.Fields(l[22:])) != 9 {
						t.Errorf("acs_hmac row without ratios: %q", l)
					}
				}
			}
			if !found {
				t.Errorf("no table row for %s / %s", wl.Name, target)
			}
		}
	}
	for _, want := range []string{"machine: ", "req/s x plain", "p99 x plain"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q", want)
		}
	}

	// Every child is gone once the harness is closed.
	pids := h.Pids()
	if len(pids) < 4 {
		t.Errorf("only %d child processes recorded", len(pids))
	}
	h.Close()
	for _, pid := range pids {
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("child %d still exists after Close (kill 0: %v)", pid, err)
		}
	}
}
