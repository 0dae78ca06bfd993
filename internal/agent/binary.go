package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// FindBinary returns the consul binary to run: explicit (CONSUL_BIN), else
// consul on PATH, else bin/consul at the module root.
func FindBinary(explicit string) (string, error) {
	if explicit != "" {
		if _, err := os.Stat(explicit); err != nil {
			return "", fmt.Errorf("CONSUL_BIN: %w", err)
		}
		return explicit, nil
	}
	if p, err := exec.LookPath("consul"); err == nil {
		return p, nil
	}
	root, err := moduleRoot()
	if err != nil {
		return "", fmt.Errorf("no consul on PATH and %v", err)
	}
	p := filepath.Join(root, "bin", "consul")
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("no consul on PATH and no %s (run `make consul`)", p)
	}
	return p, nil
}

// Binary runs consul as a child process.
type Binary struct {
	path, configDir string
	out             *syncBuffer

	mu   sync.Mutex // guards cmd, done
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
}

// NewBinary prepares to run the consul binary at path for a: random free
// loopback ports (plus a plain-HTTP one when plain is set), a config and
// a data directory under a.Dir. It sets a.Addr and a.PlainAddr.
func NewBinary(a *Agent, path string, plain bool) (*Binary, error) {
	ports := Ports{HTTP: -1, DNS: -1, GRPC: -1, GRPCTLS: -1, SerfWAN: -1}
	var err error
	for _, p := range []*int{&ports.HTTPS, &ports.SerfLAN, &ports.Server} {
		if *p, err = FreePort(); err != nil {
			return nil, err
		}
	}
	if plain {
		if ports.HTTP, err = FreePort(); err != nil {
			return nil, err
		}
		a.PlainAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(ports.HTTP))
	}
	a.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(ports.HTTPS))
	dataDir := filepath.Join(a.Dir, "data")
	configDir := filepath.Join(a.Dir, "config")
	for _, d := range []string{dataDir, configDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, err
		}
	}
	cfg, err := Config(a.Dir, dataDir, "127.0.0.1", ports, a.ManagementToken, a.AgentToken)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(configDir, "consul.json"), cfg, 0o600); err != nil {
		return nil, err
	}
	return &Binary{path: path, configDir: configDir, out: &syncBuffer{}}, nil
}

// Start starts the agent; it does not wait for it to be ready.
func (b *Binary) Start(ctx context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	cmd := exec.Command(b.path, "agent", "-config-dir="+b.configDir)
	cmd.Stdout, cmd.Stderr = b.out, b.out
	SetPdeathsig(cmd) // no consul outlives the test binary
	// Pdeathsig fires when the thread that forked the child exits, so
	// fork from a locked thread that lives exactly as long as the child.
	started := make(chan error, 1)
	done := make(chan struct{})
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with this goroutine
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		_ = cmd.Wait()
		close(done)
	}()
	if err := <-started; err != nil {
		return err
	}
	b.cmd, b.done = cmd, done
	return nil
}

// Stop stops the agent (SIGTERM, then SIGKILL after 10 s) and waits for it.
func (b *Binary) Stop(ctx context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.cmd == nil {
		return nil
	}
	cmd, done := b.cmd, b.done
	b.cmd, b.done = nil, nil
	select {
	case <-done:
		return nil // already gone
	default:
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	grace := time.NewTimer(10 * time.Second)
	defer grace.Stop()
	select {
	case <-done:
		return nil
	case <-grace.C:
	case <-ctx.Done():
	}
	if err := cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	<-done
	return nil
}

// Logs returns the agent's last output lines.
func (b *Binary) Logs() string { return Tail(b.out.String(), 40) }

// syncBuffer collects the agent's output.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// moduleRoot returns the nearest directory at or above the working
// directory that holds a go.mod.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod above the working directory")
		}
		dir = parent
	}
}
