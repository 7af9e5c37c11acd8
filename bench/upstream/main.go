// Command upstream is the benchmark harness's stand-in for ACS: as small and
// fast as an HTTP server can be, so that what the harness measures is the
// proxy in front of it.
//
// Every request is answered 200 with a tiny JSON body after its request body
// has been read and discarded. Two paths are the harness's own:
//
//	/__bench/check  answers, as JSON, the request as it arrived (method,
//	                request-target, Host, headers, body length and SHA-256),
//	                so the harness can prove the acs_hmac proxy signed it
//	/__bench/stats  answers the number of requests served so far (not
//	                counting /__bench/ paths), so the harness can prove that
//	                every request the load generator saw answered reached here
//
// It listens on -addr (default 127.0.0.1:0, a free port) and prints the
// address it listens on as the first line of stdout.
package main

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// Check is the answer of /__bench/check.
type Check struct {
	Method        string      `json:"method"`
	RequestURI    string      `json:"request_uri"`
	Host          string      `json:"host"`
	Header        http.Header `json:"header"`
	ContentLength int64       `json:"content_length"`
	BodyBytes     int64       `json:"body_bytes"`
	BodySHA256    string      `json:"body_sha256"` // base64, as x-ms-content-sha256
}

var (
	served atomic.Int64
	okBody = []byte(`{"ok":true}` + "\n")
	okLen  = strconv.Itoa(len(okBody))
)

func handle(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, "/__bench/") {
		benchPath(w, r)
		return
	}
	_, err := io.Copy(io.Discard, r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	served.Add(1)
	h := w.Header()
	h["Content-Type"] = []string{"application/json"}
	h["Content-Length"] = []string{okLen}
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(okBody)
}

func benchPath(w http.ResponseWriter, r *http.Request) {
	var v any
	switch r.URL.Path {
	case "/__bench/check":
		h := sha256.New()
		n, err := io.Copy(h, r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		v = Check{
			Method:        r.Method,
			RequestURI:    r.RequestURI,
			Host:          r.Host,
			Header:        r.Header,
			ContentLength: r.ContentLength,
			BodyBytes:     n,
			BodySHA256:    base64.StdEncoding.EncodeToString(h.Sum(nil)),
		}
	case "/__bench/stats":
		v = map[string]int64{"served": served.Load()}
	default:
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "listen address")
	flag.Parse()
	log.SetPrefix("upstream: ")
	log.SetFlags(0)

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(ln.Addr().String())
	os.Stdout.Sync()

	srv := &http.Server{
		Handler:           http.HandlerFunc(handle),
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       5 * time.Minute,
		ErrorLog:          log.New(io.Discard, "", 0),
	}
	log.Fatal(srv.Serve(ln))
}
