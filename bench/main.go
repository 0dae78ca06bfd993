// Command bench measures securereg against go-micro's stock Consul plugin and
// raw consul/api, side by side in one run against one local Consul 1.16.1
// (make bench). The variants run interleaved, round after round:
//
//	S   securereg: mTLS + least-privilege token
//	P   stock plugin over plain HTTP (the only variant given the plain listener)
//	PT  stock plugin with TLS via registry.TLSConfig
//	R   raw consul/api with a pooled mTLS transport (the practical limit)
//
// Each round measures GetService of a 5-instance service sequentially and
// with 8 concurrent callers, the client CPU per call (getrusage of this
// process; Consul runs in another) and the new TCP connections per 1000
// calls (the kernel's ActiveOpens; for HTTPS each is a TLS handshake). It
// prints a markdown table of medians with min–max and the ratios per round.
// It asserts nothing: -smoke runs a few calls to show it works.
package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/go-micro/plugins/v4/registry/consul"
	"github.com/hashicorp/consul/api"
	"github.com/hashicorp/go-cleanhttp"
	"github.com/securereg/securereg"
	"github.com/securereg/securereg/internal/agent"
	"github.com/securereg/securereg/internal/pki"
	"go-micro.dev/v4/registry"
)

const service = "bench"

// profile, when set, receives a CPU profile of the measured rounds.
var profile *os.File

func main() {
	rounds := flag.Int("rounds", 5, "rounds of all variants")
	seqN := flag.Int("seq", 1500, "sequential calls per variant and round")
	concN := flag.Int("conc-calls", 3000, "calls per variant and round at 8 concurrent")
	idle := flag.Duration("idle", 20*time.Second, "how long to count a watch's requests with nothing changing")
	smoke := flag.Bool("smoke", false, "a quick run that only shows the harness works")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the measured calls to this `file`")
	flag.Parse()
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
		defer f.Close()
		profile = f
	}
	if *smoke {
		*rounds, *seqN, *concN, *idle = 1, 50, 80, 2*time.Second
	}
	if err := run(*rounds, *seqN, *concN, *idle); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

type variant struct {
	key, desc string
	get       func() error
}

type sample struct {
	seq, conc           float64 // calls/s
	cpuSeq, cpuConc     float64 // µs of client CPU per call
	connsSeq, connsConc float64 // new TCP connections per 1000 calls
}

func run(rounds, seqN, concN int, idle time.Duration) error {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "securereg-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	bin, err := agent.FindBinary(os.Getenv("CONSUL_BIN"))
	if err != nil {
		return fmt.Errorf("%w (run `make consul`)", err)
	}
	ag, err := agent.Prepare(dir)
	if err != nil {
		return err
	}
	proc, err := agent.NewBinary(ag, bin, true) // plain HTTP listener for the P baseline only
	if err != nil {
		return err
	}
	if err := proc.Start(ctx); err != nil {
		return err
	}
	defer func() { _ = proc.Stop(context.Background()) }()
	rctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := ag.WaitReady(rctx); err != nil {
		return fmt.Errorf("consul: %w\n%s", err, proc.Logs())
	}

	quiet := securereg.Logger(slog.New(slog.DiscardHandler))
	base := []registry.Option{registry.Addrs(ag.Addr), securereg.CAFile(ag.CAFile),
		securereg.ClientCert(ag.ClientCertFile, ag.ClientKeyFile), securereg.ServerName(ag.ServerName), quiet}

	// Five instances of a typical go-micro service.
	admin, err := securereg.New(append(base, securereg.Token(ag.ManagementToken))...)
	if err != nil {
		return err
	}
	defer admin.Close()
	for i := range 5 {
		if err := admin.Register(benchService(i)); err != nil {
			return fmt.Errorf("register: %w", err)
		}
	}

	tok, err := ag.MintToken("bench-client")
	if err != nil {
		return err
	}
	tokFile, err := ag.WriteTokenFile(tok)
	if err != nil {
		return err
	}
	s, err := securereg.New(append(base, securereg.TokenFile(tokFile))...)
	if err != nil {
		return err
	}
	defer s.Close()
	p := consul.NewRegistry(registry.Addrs(ag.PlainAddr), consul.Config(&api.Config{Token: tok}))
	tlsCfg, err := securereg.NewTLSConfig(append(base, securereg.TokenFile(tokFile))...)
	if err != nil {
		return err
	}
	pt := consul.NewRegistry(registry.Addrs(ag.Addr), registry.TLSConfig(tlsCfg), consul.Config(&api.Config{Token: tok}))
	rt := cleanhttp.DefaultPooledTransport()
	rt.TLSClientConfig = tlsCfg.Clone()
	rt.ForceAttemptHTTP2 = true
	raw, err := api.NewClient(&api.Config{Address: ag.Addr, Scheme: "https", Token: tok, HttpClient: &http.Client{Transport: rt}})
	if err != nil {
		return err
	}
	rawQ := &api.QueryOptions{AllowStale: true}

	variants := []variant{
		{"S", "securereg, mTLS + least-privilege token", func() error { return expect5(s.GetService(service)) }},
		{"P", "stock plugin, plain HTTP", func() error { return expect5(p.GetService(service)) }},
		{"PT", "stock plugin, TLS via registry.TLSConfig", func() error { return expect5(pt.GetService(service)) }},
		{"R", "raw consul/api, pooled mTLS", func() error {
			e, _, err := raw.Health().Service(service, "", false, rawQ)
			if err == nil && len(e) != 5 {
				err = fmt.Errorf("%d instances, want 5", len(e))
			}
			return err
		}},
	}
	for _, v := range variants { // warm up: connections, caches
		for range 50 {
			if err := v.get(); err != nil {
				return fmt.Errorf("%s: %w", v.key, err)
			}
		}
	}

	if profile != nil {
		if err := pprof.StartCPUProfile(profile); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	results := map[string][]sample{}
	for r := range rounds {
		order := slices.Clone(variants)
		for range r % len(order) { // rotate the order each round
			order = append(order[1:], order[0])
		}
		for _, v := range order {
			smp, err := measure(v, seqN, concN)
			if err != nil {
				return fmt.Errorf("%s: %w", v.key, err)
			}
			results[v.key] = append(results[v.key], smp)
		}
		fmt.Fprintf(os.Stderr, "round %d/%d done\n", r+1, rounds)
	}

	watchRate, err := idleWatch(base, tokFile, ag, idle)
	if err != nil {
		return err
	}
	report(variants, results, watchRate, idle, seqN, concN)
	return nil
}

func expect5(svcs []*registry.Service, err error) error {
	if err != nil {
		return err
	}
	if len(svcs) != 1 || len(svcs[0].Nodes) != 5 {
		return fmt.Errorf("got %d versions, want 1 with 5 nodes", len(svcs))
	}
	return nil
}

func benchService(i int) *registry.Service {
	return &registry.Service{
		Name: service, Version: "latest",
		Nodes: []*registry.Node{{Id: fmt.Sprintf("%s-%d", service, i), Address: fmt.Sprintf("127.0.0.1:%d", 9000+i),
			Metadata: map[string]string{"broker": "http", "protocol": "grpc", "registry": "consul", "server": "grpc", "transport": "grpc"}}},
		Endpoints: []*registry.Endpoint{
			{Name: "Bench.Call", Metadata: map[string]string{"stream": "false"},
				Request:  &registry.Value{Name: "Request", Type: "Request", Values: []*registry.Value{{Name: "name", Type: "string"}}},
				Response: &registry.Value{Name: "Response", Type: "Response", Values: []*registry.Value{{Name: "msg", Type: "string"}}}},
			{Name: "Bench.Stream", Metadata: map[string]string{"stream": "true"}},
		},
	}
}

func measure(v variant, seqN, concN int) (sample, error) {
	var s sample
	cpu0, conns0 := cpuTime(), activeOpens()
	t0 := time.Now()
	for range seqN {
		if err := v.get(); err != nil {
			return s, err
		}
	}
	d := time.Since(t0)
	s.seq = float64(seqN) / d.Seconds()
	s.cpuSeq = float64((cpuTime() - cpu0).Microseconds()) / float64(seqN)
	s.connsSeq = float64(activeOpens()-conns0) * 1000 / float64(seqN)

	cpu0, conns0 = cpuTime(), activeOpens()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	per := concN / 8
	t0 = time.Now()
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range per {
				if err := v.get(); err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
					return
				}
			}
		}()
	}
	wg.Wait()
	d = time.Since(t0)
	if firstErr != nil {
		return s, firstErr
	}
	n := per * 8
	s.conc = float64(n) / d.Seconds()
	s.cpuConc = float64((cpuTime() - cpu0).Microseconds()) / float64(n)
	s.connsConc = float64(activeOpens()-conns0) * 1000 / float64(n)
	return s, nil
}

// cpuTime is this process's user+system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// activeOpens is the kernel's count of TCP connections opened from this
// network namespace (/proc/net/snmp), or 0 where it cannot be read.
func activeOpens() int64 {
	f, err := os.Open("/proc/net/snmp")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	var header []string
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 || fields[0] != "Tcp:" {
			continue
		}
		if header == nil {
			header = fields
			continue
		}
		for i, h := range header {
			if h == "ActiveOpens" && i < len(fields) {
				n, _ := strconv.ParseInt(fields[i], 10, 64)
				return n
			}
		}
	}
	return 0
}

// idleWatch counts the HTTP requests a securereg watch makes while nothing
// changes. The watch talks to Consul through a counting TLS reverse proxy
// on loopback, so every request is seen.
func idleWatch(base []registry.Option, tokFile string, ag *agent.Agent, d time.Duration) (float64, error) {
	// base verifies Consul itself; the proxy presents its own certificate.
	var count atomic.Int64
	upstream, err := url.Parse("https://" + ag.Addr)
	if err != nil {
		return 0, err
	}
	tlsCfg, err := securereg.NewTLSConfig(append(base, securereg.TokenFile(tokFile))...)
	if err != nil {
		return 0, err
	}
	proxy := httputil.NewSingleHostReverseProxy(upstream)
	proxy.Transport = &http.Transport{TLSClientConfig: tlsCfg}
	proxy.ErrorLog = log.New(io.Discard, "", 0) // the watch's open query is cut at the end
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/v1/health/service/") {
			count.Add(1)
		}
		proxy.ServeHTTP(w, r)
	}))
	cert, err := ag.CA.Issue(pki.Leaf{CommonName: "proxy", IPs: []net.IP{net.IPv4(127, 0, 0, 1)}, Server: true})
	if err != nil {
		return 0, err
	}
	pair, err := cert.TLS()
	if err != nil {
		return 0, err
	}
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{pair}}
	srv.StartTLS()
	defer srv.Close()

	r, err := securereg.New(registry.Addrs(srv.Listener.Addr().String()), securereg.CAFile(ag.CAFile),
		securereg.ClientCert(ag.ClientCertFile, ag.ClientKeyFile), securereg.TokenFile(tokFile),
		securereg.Logger(slog.New(slog.DiscardHandler)))
	if err != nil {
		return 0, err
	}
	defer r.Close()
	w, err := r.Watch(registry.WatchService(service))
	if err != nil {
		return 0, err
	}
	defer w.Stop()
	if _, err := w.Next(); err != nil { // the initial state
		return 0, err
	}
	time.Sleep(time.Second) // the watch's blocking query is now open
	// Calibrate: lookups through the proxy must be counted.
	before := count.Load()
	for range 5 {
		if _, err := r.GetService(service); err != nil {
			return 0, err
		}
	}
	if count.Load()-before != 5 {
		return 0, fmt.Errorf("the counting proxy saw %d of 5 lookups", count.Load()-before)
	}
	before = count.Load()
	time.Sleep(d)
	return float64(count.Load()-before) / d.Minutes(), nil
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s) == 0 {
		return math.NaN()
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func pick(ss []sample, f func(sample) float64) []float64 {
	out := make([]float64, len(ss))
	for i, s := range ss {
		out[i] = f(s)
	}
	return out
}

func span(xs []float64, format string) string {
	return fmt.Sprintf(format+" ("+format+"–"+format+")", median(xs), slices.Min(xs), slices.Max(xs))
}

func ratios(a, b []float64) []float64 {
	out := make([]float64, len(a))
	for i := range a {
		out[i] = a[i] / b[i]
	}
	return out
}

func fmtList(xs []float64) string {
	var parts []string
	for _, x := range xs {
		parts = append(parts, fmt.Sprintf("%.2f", x))
	}
	return strings.Join(parts, ", ")
}

func report(variants []variant, res map[string][]sample, watchRate float64, idle time.Duration, seqN, concN int) {
	fmt.Printf("\nGetService of a 5-instance service against one local Consul 1.16.1; %d rounds, interleaved; %d sequential and %d calls at 8 concurrent per variant and round; %s, %d CPUs, %s.\n\n",
		len(res["S"]), seqN, concN, runtime.Version(), runtime.NumCPU(), runtime.GOOS+"/"+runtime.GOARCH)
	fmt.Println("| variant | seq calls/s median (min–max) | conc 8 calls/s median (min–max) | client CPU µs/call seq / conc | new conns per 1000 calls seq / conc |")
	fmt.Println("|---|---|---|---|---|")
	for _, v := range variants {
		ss := res[v.key]
		fmt.Printf("| %s: %s | %s | %s | %.0f / %.0f | %.1f / %.1f |\n", v.key, v.desc,
			span(pick(ss, func(s sample) float64 { return s.seq }), "%.0f"),
			span(pick(ss, func(s sample) float64 { return s.conc }), "%.0f"),
			median(pick(ss, func(s sample) float64 { return s.cpuSeq })), median(pick(ss, func(s sample) float64 { return s.cpuConc })),
			median(pick(ss, func(s sample) float64 { return s.connsSeq })), median(pick(ss, func(s sample) float64 { return s.connsConc })))
	}
	seq := func(k string) []float64 { return pick(res[k], func(s sample) float64 { return s.seq }) }
	conc := func(k string) []float64 { return pick(res[k], func(s sample) float64 { return s.conc }) }
	cpu := func(k string) []float64 { return pick(res[k], func(s sample) float64 { return s.cpuConc }) }
	fmt.Println("\n| ratio (per round) | median | rounds | goal |")
	fmt.Println("|---|---|---|---|")
	row := func(name string, xs []float64, goal string) {
		fmt.Printf("| %s | %.2f | %s | %s |\n", name, median(xs), fmtList(xs), goal)
	}
	row("S / P sequential", ratios(seq("S"), seq("P")), "≥ 2.0")
	row("S / P 8 concurrent", ratios(conc("S"), conc("P")), "≥ 3.0")
	row("S / R sequential", ratios(seq("S"), seq("R")), "≥ 0.9")
	row("S / R 8 concurrent", ratios(conc("S"), conc("R")), "≥ 0.9")
	row("client CPU per call S / R (8 concurrent)", ratios(cpu("S"), cpu("R")), "≤ 1.25")
	fmt.Printf("\nA securereg watch with nothing changing made %.1f requests per minute over %s after its first answer, counted by a proxy in front of Consul: it holds one blocking query open (5 min wait), no polling.\n", watchRate, idle)
}
