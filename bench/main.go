// Command bench measures what the acs_hmac transport costs: it runs the same
// workloads through a plain Caddy reverse_proxy and through the acs_hmac
// proxy, side by side, and prints req/s, p50 and p99 latency and the proxy's
// peak RSS for each, with the ratios acs_hmac / plain.
//
//	go run ./bench -duration 10s              # full run (about 6 minutes on 2 cores)
//	go run ./bench -short                     # seconds; checks the harness works
//	go run ./bench -markdown bench.md         # also write the table as Markdown
//
// Everything runs on loopback, each in its own process: a minimal upstream
// (bench/upstream), two Caddy processes from one binary built with
// scripts/build.sh (a plain reverse_proxy and an acs_hmac proxy, admin off,
// logs at ERROR to a file), and the load generator (bench/loadgen), started
// afresh for every measured run. Each workload gets fresh proxy processes
// and a warm-up per target; then the targets alternate within a round, and
// swap order every round; figures are the median across rounds (peak RSS:
// the maximum). Before each measured run the proxy's peak RSS (VmHWM) is
// reset through /proc/<pid>/clear_refs and read afterwards.
//
// Before anything is measured, requests through the acs_hmac proxy are
// checked at the upstream: signed (x-ms-date, x-ms-content-sha256 and an
// HMAC-SHA256 Authorization, recomputed here with the key), body intact.
// After every run, the upstream's request count must match the load
// generator's 2xx count. Failures are counted in the table's "failed"
// column and make the command exit 1.
package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

type options struct {
	Duration  time.Duration // per measured run (unless Requests)
	Requests  int64         // per measured run, instead of Duration
	Warmup    time.Duration // per target and workload, before round 1
	Rounds    int
	Conc      int    // load generator concurrency
	MemConc   int    // concurrency of the memory workload
	Caddy     string // prebuilt binary; "" builds one with scripts/build.sh
	Workloads string // comma-separated keys; "" = all
	Markdown  string // also write the table here
	Short     bool
	NoRestart bool // keep the same proxy processes across workloads
}

// workload is one kind of request load.
type workload struct {
	Key         string
	Name        string
	Method      string
	BodySize    int
	ContentType string
	Mem         bool  // the memory workload: MemConc concurrent uploads
	ShortN      int64 // requests per measured run in -short mode
}

var workloads = []workload{
	{Key: "get", Name: "GET", Method: "GET", ShortN: 400},
	{Key: "post1k", Name: "POST 1 KiB JSON", Method: "POST", BodySize: 1 << 10, ContentType: "application/json", ShortN: 400},
	{Key: "post1m", Name: "POST 1 MiB", Method: "POST", BodySize: 1 << 20, ContentType: "application/octet-stream", ShortN: 32},
	{Key: "post8m", Name: "POST 8 MiB", Method: "POST", BodySize: 8 << 20, ContentType: "application/octet-stream", ShortN: 16},
	{Key: "mem", Name: "64 x 8 MiB concurrent", Method: "POST", BodySize: 8 << 20, ContentType: "application/octet-stream", Mem: true},
}

// targets, in the order of the first round.
var targets = []string{"plain", "acs_hmac"}

// runResult is one measured run of one target on one workload.
type runResult struct {
	Round      int     `json:"round"`
	Requests   int64   `json:"requests"`
	Errors     int64   `json:"errors"`
	Non2xx     int64   `json:"non_2xx"`
	Mismatch   int64   `json:"upstream_mismatch"` // 2xx answers minus requests the upstream served
	FirstError string  `json:"first_error,omitempty"`
	RPS        float64 `json:"rps"`
	P50Ms      float64 `json:"p50_ms"`
	P99Ms      float64 `json:"p99_ms"`
	PeakKiB    int64   `json:"peak_rss_kib"`
	PeakExact  bool    `json:"peak_rss_exact"` // VmHWM after a reset; else sampled VmRSS
}

func (r runResult) failed() int64 { return r.Errors + r.Non2xx + max(r.Mismatch, -r.Mismatch) }

// cell is one workload x target of the table: aggregated rounds.
type cell struct {
	Workload, Target string
	Runs             []runResult
	RPS, P50, P99    float64 // medians across rounds
	PeakKiB          int64   // max across rounds
	PeakExact        bool
	Requests, Failed int64
}

type report struct {
	Machine  machine
	Opts     options
	Date     time.Time
	Source   string           // git describe of the module, when available
	IdleKiB  map[string]int64 // RSS of each proxy once started
	Cells    []*cell          // workload-major, targets in order
	Failures []string
}

func main() {
	var o options
	flag.DurationVar(&o.Duration, "duration", 10*time.Second, "length of each measured run")
	flag.Int64Var(&o.Requests, "requests", 0, "requests per measured run, instead of -duration")
	flag.DurationVar(&o.Warmup, "warmup", 0, "warm-up per target and workload (default: duration/5, 0.5s to 2s)")
	flag.IntVar(&o.Rounds, "rounds", 3, "rounds per workload (targets alternate, order swaps each round)")
	flag.IntVar(&o.Conc, "c", 16, "load generator concurrency (keep-alive connections)")
	flag.IntVar(&o.MemConc, "mem-c", 64, "concurrency of the memory workload (8 MiB uploads)")
	flag.StringVar(&o.Caddy, "caddy", "", "Caddy binary to use (default: build one with scripts/build.sh)")
	flag.StringVar(&o.Workloads, "workloads", "", "comma-separated workloads to run: get,post1k,post1m,post8m,mem (default all)")
	flag.StringVar(&o.Markdown, "markdown", "", "also write the results as Markdown to this file")
	flag.BoolVar(&o.Short, "short", false, "a few requests per run, one round: checks the harness, measures nothing")
	flag.BoolVar(&o.NoRestart, "no-restart", false, "keep the same proxy processes across workloads (default: fresh ones per workload)")
	keep := flag.Bool("keep", false, "keep the work directory (binaries, Caddyfiles, logs)")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	dir, err := os.MkdirTemp("", "acs-hmac-bench-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	h := newHarness(dir, !*keep)
	rep, err := run(ctx, h, o, os.Stdout, os.Stderr)
	h.Close()
	if *keep {
		fmt.Fprintln(os.Stderr, "bench: work directory kept:", dir)
	}
	if ctx.Err() != nil {
		fmt.Fprintln(os.Stderr, "bench: interrupted; every child process killed")
		os.Exit(130)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
	if len(rep.Failures) > 0 {
		fmt.Fprintf(os.Stderr, "bench: %d runs had failed requests:\n  %s\n", len(rep.Failures), strings.Join(rep.Failures, "\n  "))
		os.Exit(1)
	}
}

// run builds and starts everything in h, checks the signing path, measures,
// and prints the table to out (progress to progress).
func run(ctx context.Context, h *harness, o options, out, progress io.Writer) (*report, error) {
	if o.Short {
		o.Rounds = 1
	}
	if o.Rounds < 1 || o.Conc < 1 || o.MemConc < 1 {
		return nil, errors.New("-rounds, -c and -mem-c must be at least 1")
	}
	if !o.Short && o.Requests <= 0 && o.Duration <= 0 {
		return nil, errors.New("need -duration > 0 or -requests > 0")
	}
	if o.Warmup <= 0 {
		o.Warmup = min(max(o.Duration/5, 500*time.Millisecond), 2*time.Second)
	}
	wls, err := selectWorkloads(o.Workloads)
	if err != nil {
		return nil, err
	}
	logf := func(format string, args ...any) { fmt.Fprintf(progress, "bench: "+format+"\n", args...) }

	// Build.
	root, err := moduleRoot(ctx)
	if err != nil {
		return nil, err
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		return nil, err
	}
	binDir := filepath.Join(h.dir, "bin")
	logf("building bench/upstream and bench/loadgen")
	cmd := h.command(ctx, "go build", goBin, "build", "-o", binDir+string(filepath.Separator), "./bench/upstream", "./bench/loadgen")
	cmd.Dir = root
	if _, err := h.output("go build", cmd); err != nil {
		return nil, err
	}
	caddyBin := o.Caddy
	if caddyBin == "" {
		caddyBin = filepath.Join(binDir, "caddy")
		logf("building Caddy: sh scripts/build.sh %s", caddyBin)
		cmd := h.command(ctx, "scripts/build.sh", "sh", "scripts/build.sh", caddyBin)
		cmd.Dir = root
		if _, err := h.output("scripts/build.sh", cmd); err != nil {
			return nil, err
		}
	} else if caddyBin, err = filepath.Abs(caddyBin); err != nil {
		return nil, err
	}

	rep := &report{Machine: describeMachine(), Opts: o, Date: time.Now().UTC(), IdleKiB: map[string]int64{}, Source: "unknown"}
	if o.Caddy != "" {
		rep.Source = "prebuilt binary " + o.Caddy
	} else if g, err := exec.CommandContext(ctx, "git", "-C", root, "describe", "--always", "--dirty").Output(); err == nil {
		rep.Source = "git " + strings.TrimSpace(string(g))
	}
	v, err := h.output("caddy version", h.command(ctx, "caddy version", caddyBin, "version"))
	if err != nil {
		return nil, err
	}
	rep.Machine.Caddy, _, _ = strings.Cut(strings.TrimSpace(string(v)), " ")

	// Start the upstream and the two proxies.
	up, upAddr, err := startUpstream(ctx, h, filepath.Join(binDir, "upstream"))
	if err != nil {
		return nil, err
	}
	_ = up
	keyBytes := make([]byte, 64)
	_, _ = rand.Read(keyBytes)
	key := base64.StdEncoding.EncodeToString(keyBytes)
	proxies := map[string]*proc{}
	urls := map[string]string{}
	startProxies := func(gen int) error {
		for _, t := range targets {
			if old := proxies[t]; old != nil {
				old.kill()
				<-old.done
			}
			p, u, err := startCaddy(ctx, h, caddyBin, t, upAddr, key, gen)
			if err != nil {
				return err
			}
			proxies[t], urls[t] = p, u
			if gen == 0 {
				rep.IdleKiB[t], _ = statusKiB(p.cmd.Process.Pid, "VmRSS")
			}
			logf("%s proxy on %s (pid %d)", t, u, p.cmd.Process.Pid)
		}
		return nil
	}
	if err := startProxies(0); err != nil {
		return nil, err
	}
	logf("sanity check: requests through acs_hmac arrive signed, bodies intact")
	if err := sanityCheck(ctx, urls["plain"], urls["acs_hmac"], keyBytes); err != nil {
		return nil, fmt.Errorf("sanity check: %w", err)
	}

	loadgen := filepath.Join(binDir, "loadgen")
	upURL := "http://" + upAddr
	for i, wl := range wls {
		if i > 0 && !o.NoRestart {
			// Fresh processes: a workload's peak RSS never includes heap an
			// earlier workload left behind (the Go runtime returns it slowly).
			if err := startProxies(i); err != nil {
				return nil, err
			}
		}
		cells := map[string]*cell{}
		for _, t := range targets {
			cells[t] = &cell{Workload: wl.Name, Target: t, PeakExact: true}
			rep.Cells = append(rep.Cells, cells[t])
		}
		for _, t := range targets {
			p := proxies[t]
			args := loadArgs(o, wl, urls[t], true)
			logf("%-22s %-8s warm-up %s", wl.Name, t, strings.Join(args[len(args)-2:], " "))
			if _, err := runLoad(ctx, h, loadgen, args, p, upURL); err != nil {
				return nil, fmt.Errorf("%s, %s, warm-up: %w", wl.Name, t, err)
			}
		}
		for round := range o.Rounds {
			order := slices.Clone(targets)
			if round%2 == 1 {
				slices.Reverse(order)
			}
			for _, t := range order {
				r, err := runLoad(ctx, h, loadgen, loadArgs(o, wl, urls[t], false), proxies[t], upURL)
				if err != nil {
					return nil, fmt.Errorf("%s, %s, round %d: %w", wl.Name, t, round+1, err)
				}
				r.Round = round + 1
				cells[t].Runs = append(cells[t].Runs, r)
				logf("%-22s %-8s round %d: %8.1f req/s  p50 %7.2f ms  p99 %7.2f ms  peak RSS %6.1f MiB  failed %d",
					wl.Name, t, round+1, r.RPS, r.P50Ms, r.P99Ms, mib(r.PeakKiB), r.failed())
				if r.failed() > 0 {
					rep.Failures = append(rep.Failures, fmt.Sprintf("%s, %s, round %d: %d errors, %d non-2xx, upstream count off by %d (%s)",
						wl.Name, t, round+1, r.Errors, r.Non2xx, r.Mismatch, r.FirstError))
				}
			}
		}
		for _, t := range targets {
			cells[t].aggregate()
		}
	}

	writeText(out, rep)
	if o.Markdown != "" {
		f, err := os.Create(o.Markdown)
		if err != nil {
			return rep, err
		}
		writeMarkdown(f, rep)
		if err := f.Close(); err != nil {
			return rep, err
		}
		logf("wrote %s", o.Markdown)
	}
	return rep, nil
}

func selectWorkloads(keys string) ([]workload, error) {
	if keys == "" {
		return workloads, nil
	}
	var out []workload
	for k := range strings.SplitSeq(keys, ",") {
		i := slices.IndexFunc(workloads, func(w workload) bool { return w.Key == strings.TrimSpace(k) })
		if i < 0 {
			return nil, fmt.Errorf("unknown workload %q (have get, post1k, post1m, post8m, mem)", k)
		}
		out = append(out, workloads[i])
	}
	return out, nil
}

// loadArgs returns loadgen's arguments for one run; the last two are the
// run's length.
func loadArgs(o options, wl workload, proxyURL string, warmup bool) []string {
	c := o.Conc
	if wl.Mem {
		c = o.MemConc
	}
	args := []string{"-url", proxyURL + "/sms?api-version=2021-03-07", "-method", wl.Method, "-c", strconv.Itoa(c)}
	if wl.BodySize > 0 {
		args = append(args, "-body-size", strconv.Itoa(wl.BodySize), "-content-type", wl.ContentType)
	}
	switch {
	case wl.Mem && o.Short:
		args = append(args, "-n", strconv.Itoa(c)) // each worker uploads once
	case o.Short && warmup:
		args = append(args, "-n", strconv.Itoa(c))
	case o.Short:
		args = append(args, "-n", strconv.FormatInt(max(wl.ShortN, int64(c)), 10))
	case warmup:
		args = append(args, "-duration", o.Warmup.String())
	case o.Requests > 0:
		args = append(args, "-n", strconv.FormatInt(o.Requests, 10))
	default:
		args = append(args, "-duration", o.Duration.String())
	}
	return args
}

// loadResult is loadgen's output (see loadgen/main.go).
type loadResult struct {
	Requests   int64   `json:"requests"`
	Errors     int64   `json:"errors"`
	Non2xx     int64   `json:"non_2xx"`
	Statuses   []int   `json:"non_2xx_statuses"`
	FirstError string  `json:"first_error"`
	RPS        float64 `json:"rps"`
	P50Ms      float64 `json:"p50_ms"`
	P99Ms      float64 `json:"p99_ms"`
}

// runLoad runs loadgen once against proxy, measuring its peak RSS, and
// checks the upstream served every request answered 2xx.
func runLoad(ctx context.Context, h *harness, loadgen string, args []string, proxy *proc, upURL string) (runResult, error) {
	var r runResult
	if proxy.exited() {
		return r, fmt.Errorf("the proxy has exited: %v\n%s", proxy.err, proxy.logTail())
	}
	pid := proxy.cmd.Process.Pid
	before, err := upstreamServed(ctx, upURL)
	if err != nil {
		return r, err
	}

	// Peak RSS: reset the kernel's high-water mark; where that is refused,
	// sample VmRSS instead.
	r.PeakExact = resetPeakRSS(pid) == nil
	sampled := make(chan int64, 1)
	stopSampling := make(chan struct{})
	go func() {
		var peak int64
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			if !r.PeakExact {
				if kib, err := statusKiB(pid, "VmRSS"); err == nil {
					peak = max(peak, kib)
				}
			}
			select {
			case <-stopSampling:
				sampled <- peak
				return
			case <-tick.C:
			}
		}
	}()
	outb, err := h.output("loadgen", h.command(ctx, "loadgen", loadgen, args...))
	close(stopSampling)
	peak := <-sampled
	if err != nil {
		return r, err
	}
	if r.PeakExact {
		if peak, err = statusKiB(pid, "VmHWM"); err != nil {
			return r, err
		}
	}
	r.PeakKiB = peak

	var lr loadResult
	if err := json.Unmarshal(outb, &lr); err != nil {
		return r, fmt.Errorf("loadgen output %q: %w", outb, err)
	}
	after, err := upstreamServed(ctx, upURL)
	if err != nil {
		return r, err
	}
	r.Requests, r.Errors, r.Non2xx, r.FirstError = lr.Requests, lr.Errors, lr.Non2xx, lr.FirstError
	if lr.Non2xx > 0 && r.FirstError == "" {
		r.FirstError = fmt.Sprintf("statuses %v", lr.Statuses)
	}
	r.RPS, r.P50Ms, r.P99Ms = lr.RPS, lr.P50Ms, lr.P99Ms
	r.Mismatch = (lr.Requests - lr.Non2xx) - (after - before)
	if proxy.exited() {
		return r, fmt.Errorf("the proxy exited during the run: %v\n%s", proxy.err, proxy.logTail())
	}
	return r, nil
}

func upstreamServed(ctx context.Context, upURL string) (int64, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", upURL+"/__bench/stats", nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, fmt.Errorf("upstream stats: %w", err)
	}
	defer resp.Body.Close()
	var v struct{ Served int64 }
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		return 0, fmt.Errorf("upstream stats: %w", err)
	}
	return v.Served, nil
}

func (c *cell) aggregate() {
	var rps, p50, p99 []float64
	for _, r := range c.Runs {
		rps, p50, p99 = append(rps, r.RPS), append(p50, r.P50Ms), append(p99, r.P99Ms)
		c.PeakKiB = max(c.PeakKiB, r.PeakKiB)
		c.PeakExact = c.PeakExact && r.PeakExact
		c.Requests += r.Requests
		c.Failed += r.failed()
	}
	c.RPS, c.P50, c.P99 = median(rps), median(p50), median(p99)
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(v))
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func mib(kib int64) float64 { return float64(kib) / 1024 }

// moduleRoot is the directory of this module's go.mod.
func moduleRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("run the benchmark inside the caddy-acs-hmac module (go run ./bench)")
	}
	return filepath.Dir(gomod), nil
}

// startUpstream starts bench/upstream on a free loopback port.
func startUpstream(ctx context.Context, h *harness, bin string) (*proc, string, error) {
	cmd := h.command(ctx, "upstream", bin, "-addr", "127.0.0.1:0")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, "", err
	}
	p, err := h.start("upstream", cmd)
	if err != nil {
		return nil, "", err
	}
	addr, err := firstLine(stdout, 15*time.Second)
	if err != nil {
		return nil, "", fmt.Errorf("upstream did not report its address: %v\n%s", err, p.logTail())
	}
	return p, addr, nil
}

const caddyfileTemplate = `{
	admin off
	auto_https off
	persist_config off
	log {
		output file %q
		level ERROR
	}
}

http://127.0.0.1:%d {
	bind 127.0.0.1
	reverse_proxy %s%s
}
`

const acsTransport = ` {
		transport acs_hmac {
			access_key %s
			max_body_size 64MiB
		}
	}`

// startCaddy starts one proxy (target "plain" or "acs_hmac") on a free
// loopback port and waits until it answers through to the upstream.
func startCaddy(ctx context.Context, h *harness, bin, target, upAddr, key string, gen int) (*proc, string, error) {
	transport := ""
	if target == "acs_hmac" {
		transport = fmt.Sprintf(acsTransport, key)
	}
	var lastErr error
	for attempt := range 3 { // a free port can be taken between probe and bind
		port, err := freePort()
		if err != nil {
			return nil, "", err
		}
		name := fmt.Sprintf("caddy-%s-%d-%d", target, gen, attempt)
		cfg := filepath.Join(h.dir, name+".Caddyfile")
		text := fmt.Sprintf(caddyfileTemplate, filepath.Join(h.dir, name+".errors.log"), port, upAddr, transport)
		if err := os.WriteFile(cfg, []byte(text), 0o600); err != nil {
			return nil, "", err
		}
		cmd := h.command(ctx, name, bin, "run", "--config", cfg, "--adapter", "caddyfile")
		cmd.Env = append(os.Environ(),
			"XDG_CONFIG_HOME="+filepath.Join(h.dir, "xdg-config"),
			"XDG_DATA_HOME="+filepath.Join(h.dir, "xdg-data"))
		p, err := h.start(name, cmd)
		if err != nil {
			return nil, "", err
		}
		u := fmt.Sprintf("http://127.0.0.1:%d", port)
		if lastErr = waitReady(ctx, p, u); lastErr == nil {
			return p, u, nil
		}
		p.kill()
		<-p.done
	}
	return nil, "", fmt.Errorf("%s proxy did not start: %w", target, lastErr)
}

// waitReady polls the proxy until a request goes through it to the upstream.
func waitReady(ctx context.Context, p *proc, u string) error {
	client := &http.Client{Timeout: 2 * time.Second}
	defer client.CloseIdleConnections()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if p.exited() {
			return fmt.Errorf("caddy exited: %v\n%s", p.err, p.logTail())
		}
		req, _ := http.NewRequestWithContext(ctx, "GET", u+"/__bench/stats", nil)
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("status %d", resp.StatusCode)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready after 20s: %v\n%s", err, p.logTail())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}
