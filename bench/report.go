package main

import (
	"fmt"
	"io"
	"strings"
)

func (rep *report) header() []string {
	m, o := rep.Machine, rep.Opts
	cores := fmt.Sprintf("%d CPUs", m.Cores)
	if m.Online > 0 && m.Online != m.Cores {
		cores += fmt.Sprintf(" usable of %d online", m.Online)
	}
	runLen := fmt.Sprintf("%s per run, warm-up %s", o.Duration, o.Warmup)
	switch {
	case o.Short:
		runLen = "-short: a few requests per run, warm-up one per connection (checks the harness, measures nothing)"
	case o.Requests > 0:
		runLen = fmt.Sprintf("%d requests per run, warm-up %s", o.Requests, o.Warmup)
	}
	restart := "; fresh proxy processes for each workload"
	if o.NoRestart {
		restart = "; the same proxy processes for every workload"
	}
	lines := []string{
		fmt.Sprintf("machine: %s, %s, %s; %s; Caddy %s; load average at start %s", m.CPU, cores, m.Kernel, m.Go, m.Caddy, m.LoadAvg),
		fmt.Sprintf("source: %s", rep.Source),
		fmt.Sprintf("date: %s", rep.Date.Format("2006-01-02 15:04 MST")),
		fmt.Sprintf("method: loopback; upstream, plain Caddy, acs_hmac Caddy and load generator in separate processes; "+
			"HTTP/1.1 keep-alive, %d connections (memory workload: %d); %s; %d round(s), targets alternating, order swapped each round; "+
			"req/s, p50, p99: median of rounds; peak RSS: max of rounds (VmHWM, reset before each run)%s",
			o.Conc, o.MemConc, runLen, o.Rounds, restart),
	}
	var idle []string
	for _, t := range targets {
		idle = append(idle, fmt.Sprintf("%s %.1f MiB", t, mib(rep.IdleKiB[t])))
	}
	lines = append(lines, "proxy RSS at start: "+strings.Join(idle, ", "))
	return lines
}

// pairs returns each workload's plain and acs_hmac cells.
func (rep *report) pairs() [][2]*cell {
	var out [][2]*cell
	for i := 0; i+1 < len(rep.Cells); i += 2 {
		out = append(out, [2]*cell{rep.Cells[i], rep.Cells[i+1]})
	}
	return out
}

func ratio(a, b float64) string {
	if b == 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.2f", a/b)
}

func rss(c *cell) string {
	s := fmt.Sprintf("%.1f", mib(c.PeakKiB))
	if !c.PeakExact {
		s = "~" + s // sampled VmRSS: clear_refs was refused
	}
	return s
}

// roundRatios lists acs_hmac/plain req/s per round.
func roundRatios(p [2]*cell) string {
	var rs []string
	for i := range min(len(p[0].Runs), len(p[1].Runs)) {
		rs = append(rs, ratio(p[1].Runs[i].RPS, p[0].Runs[i].RPS))
	}
	return strings.Join(rs, " ")
}

func writeText(w io.Writer, rep *report) {
	fmt.Fprintln(w)
	fmt.Fprintln(w, "acs_hmac vs plain reverse_proxy")
	for _, l := range rep.header() {
		fmt.Fprintln(w, l)
	}
	fmt.Fprintln(w)
	const row = "%-22s %-8s %10s %9s %9s %13s %9s %7s %14s %12s\n"
	fmt.Fprintf(w, row, "workload", "target", "req/s", "p50 ms", "p99 ms", "peak RSS MiB", "requests", "failed", "req/s x plain", "p99 x plain")
	for _, p := range rep.pairs() {
		for i, c := range p {
			rr, pr := "", ""
			if i == 1 {
				rr, pr = ratio(c.RPS, p[0].RPS), ratio(c.P99, p[0].P99)
			}
			fmt.Fprintf(w, row, c.Workload, c.Target, fmt.Sprintf("%.1f", c.RPS), fmt.Sprintf("%.2f", c.P50),
				fmt.Sprintf("%.2f", c.P99), rss(c), fmt.Sprint(c.Requests), fmt.Sprint(c.Failed), rr, pr)
		}
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "req/s acs_hmac/plain per round (spread = noise):")
	for _, p := range rep.pairs() {
		fmt.Fprintf(w, "  %-22s %s\n", p[0].Workload, roundRatios(p))
	}
}

func writeMarkdown(w io.Writer, rep *report) {
	for _, l := range rep.header() {
		k, v, _ := strings.Cut(l, ": ")
		fmt.Fprintf(w, "- **%s:** %s\n", k, v)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| workload | target | req/s | p50 (ms) | p99 (ms) | peak RSS (MiB) | failed | req/s × plain | p99 × plain | req/s × plain, per round |")
	fmt.Fprintln(w, "|---|---|--:|--:|--:|--:|--:|--:|--:|---|")
	for _, p := range rep.pairs() {
		for i, c := range p {
			rr, pr, per := "", "", ""
			if i == 1 {
				rr, pr, per = "**"+ratio(c.RPS, p[0].RPS)+"**", "**"+ratio(c.P99, p[0].P99)+"**", roundRatios(p)
			}
			fmt.Fprintf(w, "| %s | %s | %.1f | %.2f | %.2f | %s | %d | %s | %s | %s |\n",
				c.Workload, "`"+c.Target+"`", c.RPS, c.P50, c.P99, rss(c), c.Failed, rr, pr, per)
		}
	}
}
