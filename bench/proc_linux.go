package main

import (
	"os"
	"syscall"
)

// sysProcAttr puts a child in its own process group (so killGroup reaches its
// children too) and has the kernel SIGKILL it if the harness dies first, even
// by SIGKILL or a test-timeout panic, where no Close or Cleanup runs.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// killGroup SIGKILLs p's process group.
func killGroup(p *os.Process) error {
	if p == nil {
		return nil
	}
	if err := syscall.Kill(-p.Pid, syscall.SIGKILL); err != nil {
		return p.Kill()
	}
	return nil
}
