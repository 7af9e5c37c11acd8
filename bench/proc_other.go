//go:build !linux

package main

import (
	"os"
	"syscall"
)

// The harness measures peak RSS through Linux's /proc; elsewhere it runs, but
// children are only killed one by one.
func sysProcAttr() *syscall.SysProcAttr { return nil }

func killGroup(p *os.Process) error {
	if p == nil {
		return nil
	}
	return p.Kill()
}
