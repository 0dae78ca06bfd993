package agent

import (
	"os/exec"
	"syscall"
)

// SetPdeathsig makes the kernel kill consul when the test binary dies, even
// by SIGKILL, so no agent outlives a crashed or timed-out test.
func SetPdeathsig(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
