//go:build !linux

package consultest

import "os/exec"

// setPdeathsig is Linux-only; elsewhere t.Cleanup is the only guard.
func setPdeathsig(*exec.Cmd) {}
