// Command loadgen is the benchmark harness's load generator, run in its own
// process so that it shares no runtime with the proxy it measures.
//
// It sends requests over HTTP/1.1 keep-alive connections from -c concurrent
// workers (one connection each), for -duration or until -n requests have been
// sent, and prints one JSON object on stdout:
//
//	{"requests":..., "errors":..., "non_2xx":..., "elapsed_s":..., "rps":...,
//	 "p50_ms":..., "p99_ms":..., "max_ms":..., ...}
//
// Every worker sends the same body (-body-size bytes; a JSON document when
// -content-type is application/json) from one shared read-only buffer, so the
// load generator's own memory does not grow with concurrency.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Result is what loadgen prints.
type Result struct {
	Requests   int64   `json:"requests"` // requests answered (any status)
	Errors     int64   `json:"errors"`   // transport errors (no answer)
	Non2xx     int64   `json:"non_2xx"`
	Status     []int   `json:"non_2xx_statuses,omitempty"` // a few, for diagnosis
	FirstError string  `json:"first_error,omitempty"`
	ElapsedS   float64 `json:"elapsed_s"`
	RPS        float64 `json:"rps"` // answered requests per second
	P50Ms      float64 `json:"p50_ms"`
	P99Ms      float64 `json:"p99_ms"`
	MaxMs      float64 `json:"max_ms"`
	BodyBytes  int     `json:"body_bytes"`
	Conc       int     `json:"concurrency"`
}

func main() {
	target := flag.String("url", "", "URL to send requests to (required)")
	method := flag.String("method", "GET", "request method")
	bodySize := flag.Int("body-size", 0, "request body size in bytes")
	contentType := flag.String("content-type", "application/octet-stream", "Content-Type of request bodies")
	conc := flag.Int("c", 16, "concurrent workers (one keep-alive connection each)")
	duration := flag.Duration("duration", 0, "how long to send requests (this or -n)")
	total := flag.Int64("n", 0, "how many requests to send (this or -duration)")
	timeout := flag.Duration("timeout", 60*time.Second, "per-request timeout")
	flag.Parse()
	log.SetPrefix("loadgen: ")
	log.SetFlags(0)
	if *target == "" || *conc < 1 || (*duration <= 0) == (*total <= 0) {
		log.Fatal("need -url, -c >= 1, and exactly one of -duration or -n")
	}

	body := makeBody(*bodySize, *contentType)
	tr := &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		MaxIdleConns:        *conc,
		MaxIdleConnsPerHost: *conc,
		MaxConnsPerHost:     *conc,
		IdleConnTimeout:     time.Minute,
		DisableCompression:  true,
		ForceAttemptHTTP2:   false,
		WriteBufferSize:     64 << 10,
		ReadBufferSize:      16 << 10,
	}
	client := &http.Client{Transport: tr, Timeout: *timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

	var (
		started  atomic.Int64
		errs     atomic.Int64
		non2xx   atomic.Int64
		mu       sync.Mutex
		statuses []int
		firstErr string
		wg       sync.WaitGroup
	)
	lat := make([][]time.Duration, *conc)
	begin := time.Now()
	deadline := begin.Add(*duration)
	for w := range *conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			mine := make([]time.Duration, 0, 1024)
			for {
				if *total > 0 {
					if started.Add(1) > *total {
						break
					}
				} else if !time.Now().Before(deadline) {
					break
				}
				var rd io.Reader
				if len(body) > 0 {
					rd = bytes.NewReader(body)
				}
				req, err := http.NewRequestWithContext(context.Background(), *method, *target, rd)
				if err != nil {
					log.Fatal(err)
				}
				if len(body) > 0 {
					req.Header.Set("Content-Type", *contentType)
				}
				t0 := time.Now()
				resp, err := client.Do(req)
				if err == nil {
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				d := time.Since(t0)
				if err != nil {
					errs.Add(1)
					mu.Lock()
					if firstErr == "" {
						firstErr = err.Error()
					}
					mu.Unlock()
					if errors.Is(err, context.Canceled) {
						return
					}
					continue
				}
				mine = append(mine, d)
				if resp.StatusCode < 200 || resp.StatusCode > 299 {
					non2xx.Add(1)
					mu.Lock()
					if len(statuses) < 8 {
						statuses = append(statuses, resp.StatusCode)
					}
					mu.Unlock()
				}
			}
			lat[w] = mine
		}()
	}
	wg.Wait()
	elapsed := time.Since(begin)

	all := slices.Concat(lat...)
	slices.Sort(all)
	r := Result{
		Requests:   int64(len(all)),
		Errors:     errs.Load(),
		Non2xx:     non2xx.Load(),
		Status:     statuses,
		FirstError: firstErr,
		ElapsedS:   elapsed.Seconds(),
		RPS:        float64(len(all)) / elapsed.Seconds(),
		P50Ms:      ms(percentile(all, 0.50)),
		P99Ms:      ms(percentile(all, 0.99)),
		BodyBytes:  len(body),
		Conc:       *conc,
	}
	if len(all) > 0 {
		r.MaxMs = ms(all[len(all)-1])
	}
	if err := json.NewEncoder(os.Stdout).Encode(r); err != nil {
		log.Fatal(err)
	}
}

// percentile returns the p-quantile of sorted (nearest rank).
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted))*p+0.999999) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// makeBody returns n bytes: a JSON document shaped like an ACS SMS request for
// application/json, pseudo-random bytes otherwise (a fixed seed, so every run
// sends the same bytes).
func makeBody(n int, contentType string) []byte {
	if n <= 0 {
		return nil
	}
	if strings.HasPrefix(contentType, "application/json") {
		head := `{"from":"+18005550100","smsRecipients":[{"to":"+18005550199"}],"message":"`
		tail := `"}`
		if pad := n - len(head) - len(tail); pad >= 0 {
			return []byte(head + strings.Repeat("x", pad) + tail)
		}
		return []byte(fmt.Sprintf("%q", strings.Repeat("x", max(0, n-2))))
	}
	b := make([]byte, n)
	rng := rand.New(rand.NewPCG(4, 4))
	for i := 0; i+8 <= n; i += 8 {
		v := rng.Uint64()
		for j := range 8 {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return b
}
