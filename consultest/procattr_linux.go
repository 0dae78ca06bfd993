package consultest

import (
	"os/exec"
	"syscall"
)

// setPdeathsig makes the kernel kill consul when the test binary dies, even
// by SIGKILL, so no agent outlives a crashed or timed-out test.
func setPdeathsig(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
