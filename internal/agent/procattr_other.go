//go:build !linux

package agent

import "os/exec"

// SetPdeathsig is Linux-only; elsewhere t.Cleanup is the only guard.
func SetPdeathsig(*exec.Cmd) {}
