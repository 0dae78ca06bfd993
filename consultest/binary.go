package consultest

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
	"testing"
	"time"
)

// findBinary returns the consul binary to run: explicit (CONSUL_BIN or
// WithBinary), else consul on PATH, else bin/consul at the module root.
func findBinary(explicit string) (string, error) {
	if explicit != "" {
		if _, err := os.Stat(explicit); err != nil {
			return "", fmt.Errorf("%s: %w", EnvBinary, err)
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

// binary runs consul as a child process.
type binary struct {
	path, configDir string
	out             *syncBuffer

	mu   sync.Mutex // guards cmd, done
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
}

func newBinary(t testing.TB, srv *Server, s *settings, agentToken string) (runner, error) {
	ports := agentPorts{HTTP: -1, DNS: -1, GRPC: -1, GRPCTLS: -1, SerfWAN: -1}
	var err error
	for _, p := range []*int{&ports.HTTPS, &ports.SerfLAN, &ports.Server} {
		if *p, err = freePort(); err != nil {
			return nil, err
		}
	}
	if s.plain {
		if ports.HTTP, err = freePort(); err != nil {
			return nil, err
		}
		srv.PlainAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(ports.HTTP))
	}
	srv.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(ports.HTTPS))
	dataDir := filepath.Join(srv.Dir, "data")
	configDir := filepath.Join(srv.Dir, "config")
	for _, d := range []string{dataDir, configDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, err
		}
	}
	cfg, err := agentConfig(srv.Dir, dataDir, "127.0.0.1", ports, srv.ManagementToken, agentToken)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(configDir, "consul.json"), cfg, 0o600); err != nil {
		return nil, err
	}
	return &binary{path: s.binary, configDir: configDir, out: &syncBuffer{}}, nil
}

func (b *binary) start(ctx context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	cmd := exec.Command(b.path, "agent", "-config-dir="+b.configDir)
	cmd.Stdout, cmd.Stderr = b.out, b.out
	setPdeathsig(cmd) // no consul outlives the test binary
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

func (b *binary) stop(ctx context.Context) error {
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

func (b *binary) terminate(ctx context.Context) error { return b.stop(ctx) }

func (b *binary) logs() string { return tail(b.out.String(), 40) }

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
