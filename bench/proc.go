package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// harness owns a work directory and every child process the benchmark
// starts. Close kills them all (each in its own process group, so a child's
// children go too) and waits for them; it is safe to call more than once and
// from a test's Cleanup. Should the harness itself die without Close, Linux
// kills the children anyway (Pdeathsig, see proc_linux.go).
type harness struct {
	dir     string
	ownsDir bool // remove dir on Close

	mu     sync.Mutex
	procs  []*proc
	closed bool
}

// proc is one child process.
type proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{} // closed once Wait has returned
	err  error         // Wait's result, valid after done
	log  string        // file holding the child's stderr (and stdout, if not captured)
}

func newHarness(dir string, ownsDir bool) *harness {
	return &harness{dir: dir, ownsDir: ownsDir}
}

// Pids returns the pids of every process ever started (for tests).
func (h *harness) Pids() []int {
	h.mu.Lock()
	defer h.mu.Unlock()
	var pids []int
	for _, p := range h.procs {
		if p.cmd.Process != nil {
			pids = append(pids, p.cmd.Process.Pid)
		}
	}
	return pids
}

// Close kills every child process group and waits for the children.
func (h *harness) Close() {
	h.mu.Lock()
	procs := h.procs
	already := h.closed
	h.closed = true
	h.mu.Unlock()
	for _, p := range procs {
		p.kill()
	}
	for _, p := range procs {
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			fmt.Fprintf(os.Stderr, "bench: %s (pid %d) did not exit after SIGKILL\n", p.name, p.cmd.Process.Pid)
		}
	}
	if h.ownsDir && !already {
		os.RemoveAll(h.dir)
	}
}

// command prepares a child: its own process group, killed (the whole group)
// when ctx ends, and killed by the kernel if this process dies.
func (h *harness) command(ctx context.Context, name, path string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.SysProcAttr = sysProcAttr()
	cmd.Cancel = func() error { return killGroup(cmd.Process) }
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// start starts cmd as a long-running child. Its stderr (and stdout unless
// the caller took it) go to <dir>/<name>.log.
func (h *harness) start(name string, cmd *exec.Cmd) (*proc, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, errors.New("harness closed")
	}
	logPath := filepath.Join(h.dir, name+".log")
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd.Stderr = f
	if cmd.Stdout == nil {
		cmd.Stdout = f
	}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, done: make(chan struct{}), log: logPath}
	h.procs = append(h.procs, p)
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	return p, nil
}

// output runs cmd to completion as a tracked child and returns its stdout.
// On failure the error includes the tail of its stderr.
func (h *harness) output(name string, cmd *exec.Cmd) ([]byte, error) {
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil, errors.New("harness closed")
	}
	if err := cmd.Start(); err != nil {
		h.mu.Unlock()
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, done: make(chan struct{})}
	h.procs = append(h.procs, p)
	h.mu.Unlock()
	p.err = cmd.Wait()
	close(p.done)
	if p.err != nil {
		return stdout.Bytes(), fmt.Errorf("%s: %w\n%s", name, p.err, tail(stderr.String(), 2000))
	}
	return stdout.Bytes(), nil
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *proc) kill() {
	if p.cmd.Process != nil && !p.exited() {
		_ = killGroup(p.cmd.Process)
	}
}

// logTail returns the end of the child's log file, for error messages.
func (p *proc) logTail() string {
	if p.log == "" {
		return ""
	}
	b, _ := os.ReadFile(p.log)
	return tail(string(b), 2000)
}

// firstLine reads the first line a child prints on r (its stdout pipe), or
// fails after timeout.
func firstLine(r io.Reader, timeout time.Duration) (string, error) {
	ch := make(chan string, 1)
	errc := make(chan error, 1)
	go func() {
		line, err := bufio.NewReader(r).ReadString('\n')
		if err != nil {
			errc <- err
			return
		}
		ch <- strings.TrimSpace(line)
		// Keep draining so the child never blocks on a full pipe.
		_, _ = io.Copy(io.Discard, r)
	}()
	select {
	case l := <-ch:
		return l, nil
	case err := <-errc:
		return "", err
	case <-time.After(timeout):
		return "", errors.New("timed out")
	}
}

func tail(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) > n {
		s = "..." + s[len(s)-n:]
	}
	return s
}
