package consultest

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"
	"github.com/securereg/securereg/internal/agent"
	"github.com/testcontainers/testcontainers-go"
	tclog "github.com/testcontainers/testcontainers-go/log"
	"github.com/testcontainers/testcontainers-go/wait"
)

// Paths and ports inside the container. /bin/consul is where the official
// image keeps the binary too, so one command line serves both images.
const (
	containerConfigDir = "/consul/config"
	containerDataDir   = "/consul/data"
	containerHTTPS     = "8501/tcp"
	containerHTTP      = "8500/tcp"
)

// tcEnvOnce sets testcontainers' environment, unless the user chose:
//   - TESTCONTAINERS_RYUK_DISABLED=true: Ryuk, its reaper, is an image that
//     cannot be pulled where no registry is reachable, and t.Cleanup removes
//     our containers anyway. testcontainers reads the variable once.
//   - TESTCONTAINERS_HOST_OVERRIDE=127.0.0.1: we publish Consul's port on
//     the Docker host's loopback only, and inside a container
//     testcontainers would otherwise probe the default gateway's address.
var tcEnvOnce sync.Once

func setTestcontainersEnv() {
	tcEnvOnce.Do(func() {
		for k, v := range map[string]string{
			"TESTCONTAINERS_RYUK_DISABLED": "true",
			"TESTCONTAINERS_HOST_OVERRIDE": "127.0.0.1",
		} {
			if _, set := os.LookupEnv(k); !set {
				_ = os.Setenv(k, v)
			}
		}
	})
}

// dockerImagePresent returns nil when a Docker engine answers and has image.
// It never pulls.
func dockerImagePresent(image string) error {
	setTestcontainersEnv()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cli, err := client.New(client.FromEnv)
	if err != nil {
		return fmt.Errorf("no Docker client: %w", err)
	}
	defer cli.Close()
	if _, err := cli.Ping(ctx, client.PingOptions{NegotiateAPIVersion: true}); err != nil {
		return fmt.Errorf("no Docker engine answers: %w", err)
	}
	if _, err := cli.ImageInspect(ctx, image); err != nil {
		return fmt.Errorf("docker image %s is not present: %w", image, err)
	}
	return nil
}

// dockerRunner runs consul in a container via testcontainers-go.
type dockerRunner struct {
	t        testing.TB
	image    string
	files    []testcontainers.ContainerFile
	bindings network.PortMap
	exposed  []string

	mu  sync.Mutex // guards ctr
	ctr *testcontainers.DockerContainer
}

func newContainer(t testing.TB, ag *agent.Agent, s *settings) (runner, error) {
	ports := agent.Ports{HTTP: -1, HTTPS: 8501, DNS: -1, GRPC: -1, GRPCTLS: -1, SerfLAN: 8301, SerfWAN: -1, Server: 8300}
	// Fixed host ports on loopback, chosen now, so the address survives
	// Restart (Docker would pick new random ones).
	httpsPort, err := agent.FreePort()
	if err != nil {
		return nil, err
	}
	loopback := netip.MustParseAddr("127.0.0.1")
	r := &dockerRunner{
		t:     t,
		image: s.image,
		bindings: network.PortMap{
			network.MustParsePort(containerHTTPS): {{HostIP: loopback, HostPort: strconv.Itoa(httpsPort)}},
		},
		exposed: []string{containerHTTPS},
	}
	ag.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(httpsPort))
	if s.plain {
		ports.HTTP = 8500
		plainPort, err := agent.FreePort()
		if err != nil {
			return nil, err
		}
		r.bindings[network.MustParsePort(containerHTTP)] = []network.PortBinding{{HostIP: loopback, HostPort: strconv.Itoa(plainPort)}}
		r.exposed = append(r.exposed, containerHTTP)
		ag.PlainAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(plainPort))
	}
	cfg, err := agent.Config(containerConfigDir, containerDataDir, "0.0.0.0", ports, ag.ManagementToken, ag.AgentToken)
	if err != nil {
		return nil, err
	}
	cfgFile := filepath.Join(ag.Dir, "consul.json")
	if err := os.WriteFile(cfgFile, cfg, 0o600); err != nil {
		return nil, err
	}
	for _, f := range []struct {
		name string
		mode int64
	}{
		{"consul.json", 0o600},
		{"consul-agent-ca.pem", 0o644},
		{"dc1-server-consul-0.crt", 0o644},
		{"dc1-server-consul-0.key", 0o600},
	} {
		r.files = append(r.files, testcontainers.ContainerFile{
			HostFilePath:      filepath.Join(ag.Dir, f.name),
			ContainerFilePath: containerConfigDir + "/" + f.name,
			FileMode:          f.mode,
		})
	}
	return r, nil
}

func (r *dockerRunner) start(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ctr != nil {
		// Restart of a stopped container: same ports, same data.
		return r.ctr.Start(ctx)
	}
	ctr, err := testcontainers.Run(ctx, r.image,
		testcontainers.WithLogger(tclog.TestLogger(r.t)),
		testcontainers.WithEntrypoint("/bin/consul"),
		testcontainers.WithCmd("agent", "-config-dir="+containerConfigDir),
		testcontainers.WithFiles(r.files...),
		testcontainers.WithExposedPorts(r.exposed...),
		testcontainers.WithHostConfigModifier(func(hc *container.HostConfig) {
			hc.PortBindings = r.bindings
		}),
		testcontainers.WithWaitStrategyAndDeadline(60*time.Second,
			wait.ForLog("Consul agent running!"),
			wait.ForListeningPort(containerHTTPS).SkipInternalCheck(),
		),
	)
	if ctr != nil {
		r.ctr = ctr
	}
	return err
}

func (r *dockerRunner) stop(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ctr == nil {
		return nil
	}
	timeout := 10 * time.Second
	return r.ctr.Stop(ctx, &timeout)
}

func (r *dockerRunner) terminate(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ctr == nil {
		return nil
	}
	err := r.ctr.Terminate(ctx)
	r.ctr = nil
	return err
}

func (r *dockerRunner) logs() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ctr == nil {
		return ""
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	rc, err := r.ctr.Logs(ctx)
	if err != nil {
		return "(no container logs: " + err.Error() + ")"
	}
	defer rc.Close()
	b, _ := io.ReadAll(rc)
	return agent.Tail(string(b), 40)
}
