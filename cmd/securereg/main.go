// Command securereg tells operators whether a go-micro service's connection
// to Consul is secure, and prints the least-privilege ACL policy for one.
//
//	securereg check [--service NAME] [--json] [--strict] [connection flags]
//	securereg policy --service NAME [--discover all|none|svc1,svc2]
//
// check reads the same CONSUL_* environment variables as the library; its
// flags override them. It exits 0 when no check failed (warnings allowed
// unless --strict), 1 when a check failed, and 2 on a usage or
// configuration error. It never prints the token.
//
// Install it with:
//
//	go install github.com/securereg/securereg/cmd/securereg@latest
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/securereg/securereg"
	"go-micro.dev/v4/registry"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// Exit codes.
const (
	exitOK     = 0
	exitFailed = 1
	exitUsage  = 2
)

const usageText = `securereg: check that a go-micro service's connection to Consul is secure.

Usage:
  securereg check [--service NAME] [--json] [--strict] [connection flags]
  securereg policy --service NAME [--discover all|none|svc1,svc2]
  securereg --help | --version

check runs against the live Consul: configuration, TLS handshake and chain,
certificate expiry, enforced client certificates (mTLS), the ACL token, its
least privilege (with --service) and a plain-HTTP listener on 8500. It reads
CONSUL_HTTP_ADDR, CONSUL_CACERT, CONSUL_CAPATH, CONSUL_CLIENT_CERT,
CONSUL_CLIENT_KEY, CONSUL_TLS_SERVER_NAME, CONSUL_HTTP_TOKEN_FILE,
CONSUL_HTTP_TOKEN, CONSUL_HTTP_SSL and CONSUL_HTTP_SSL_VERIFY; flags win.
Exit status: 0 no check failed, 1 a check failed (or warned, with --strict),
2 usage or configuration error.

policy prints the least-privilege ACL policy (HCL) for a service.

Run "securereg check --help" or "securereg policy --help" for the flags.
`

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usageText)
		return exitUsage
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usageText)
		return exitOK
	case "-version", "--version", "version":
		fmt.Fprintf(stdout, "securereg %s\n", version())
		return exitOK
	case "check":
		return runCheck(ctx, args[1:], stdout, stderr)
	case "policy":
		return runPolicy(args[1:], stdout, stderr)
	}
	fmt.Fprintf(stderr, "securereg: unknown command %q\n\n%s", args[0], usageText)
	return exitUsage
}

// version is the module version when installed with go install, else the
// VCS revision, else "devel".
func version() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "devel"
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" && len(s.Value) >= 12 {
			return "devel-" + s.Value[:12]
		}
	}
	return "devel"
}

func runCheck(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("securereg check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		service    = fs.String("service", "", "check least privilege for this service `name`")
		asJSON     = fs.Bool("json", false, `print {"checks":[{"name","status","detail"}]} instead of a table`)
		strict     = fs.Bool("strict", false, "exit 1 on warnings too")
		addr       = fs.String("addr", "", "Consul `address`es, comma-separated (default $CONSUL_HTTP_ADDR, else 127.0.0.1:8501)")
		caFile     = fs.String("ca-file", "", "CA bundle `file` (default $CONSUL_CACERT)")
		caPath     = fs.String("ca-path", "", "`dir`ectory of CA files (default $CONSUL_CAPATH)")
		clientCert = fs.String("client-cert", "", "client certificate `file` (default $CONSUL_CLIENT_CERT)")
		clientKey  = fs.String("client-key", "", "client key `file` (default $CONSUL_CLIENT_KEY)")
		serverName = fs.String("server-name", "", "`name` in Consul's certificate (default $CONSUL_TLS_SERVER_NAME)")
		tokenFile  = fs.String("token-file", "", "ACL token `file` (default $CONSUL_HTTP_TOKEN_FILE, then $CONSUL_HTTP_TOKEN)")
		timeout    = fs.Duration("timeout", 30*time.Second, "give up after this `duration`")
	)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: securereg check [flags]\n\nThere is no --token flag: a token on the command line leaks into process\nlistings and shell history. Use --token-file or the environment.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "securereg check: unexpected argument %q\n", fs.Arg(0))
		return exitUsage
	}

	var opts []registry.Option
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if set["addr"] {
		opts = append(opts, registry.Addrs(strings.Split(*addr, ",")...))
	}
	if set["ca-file"] {
		opts = append(opts, securereg.CAFile(*caFile))
	}
	if set["ca-path"] {
		opts = append(opts, securereg.CAPath(*caPath))
	}
	if set["client-cert"] || set["client-key"] {
		opts = append(opts, securereg.ClientCert(*clientCert, *clientKey))
	}
	if set["server-name"] {
		opts = append(opts, securereg.ServerName(*serverName))
	}
	if set["token-file"] {
		opts = append(opts, securereg.TokenFile(*tokenFile))
	}
	if *service != "" {
		opts = append(opts, securereg.CheckService(*service))
	}
	// Problems are reported as checks; the library's own log lines would
	// only repeat them.
	opts = append(opts, securereg.Logger(discardLogger()))

	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	rep, err := securereg.Check(ctx, opts...)
	if rep != nil {
		if *asJSON {
			enc := json.NewEncoder(stdout)
			enc.SetIndent("", "  ")
			if jerr := enc.Encode(rep); jerr != nil {
				fmt.Fprintf(stderr, "securereg check: %v\n", jerr)
				return exitUsage
			}
		} else {
			printTable(stdout, rep)
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "%v\n", err)
		return exitUsage
	}
	switch rep.Status() {
	case securereg.CheckFail:
		return exitFailed
	case securereg.CheckWarn:
		if *strict {
			return exitFailed
		}
	}
	return exitOK
}

func printTable(w io.Writer, rep *securereg.Report) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "STATUS\tCHECK\tDETAIL")
	counts := map[securereg.CheckStatus]int{}
	for _, c := range rep.Checks {
		counts[c.Status]++
		fmt.Fprintf(tw, "%s\t%s\t%s\n", c.Status, c.Name, c.Detail)
	}
	_ = tw.Flush()
	fmt.Fprintf(w, "\nresult: %s (%d pass, %d warn, %d fail)\n", rep.Status(),
		counts[securereg.CheckPass], counts[securereg.CheckWarn], counts[securereg.CheckFail])
}

func runPolicy(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("securereg policy", flag.ContinueOnError)
	fs.SetOutput(stderr)
	service := fs.String("service", "", "the service `name` the token registers (required)")
	discover := fs.String("discover", "all", "services it may look up: all, none, or a comma-separated `list`")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if *service == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "securereg policy: --service NAME is required")
		fs.Usage()
		return exitUsage
	}
	var list []string
	switch *discover {
	case "all":
	case "none":
		list = []string{}
	default:
		for _, s := range strings.Split(*discover, ",") {
			if s = strings.TrimSpace(s); s != "" {
				list = append(list, s)
			}
		}
		if len(list) == 0 {
			fmt.Fprintf(stderr, "securereg policy: --discover %q: give all, none or service names\n", *discover)
			return exitUsage
		}
	}
	rules, err := securereg.ACLPolicy(*service, list)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitUsage
	}
	s := *service
	fmt.Fprintf(stdout, `# Least-privilege ACL policy for the go-micro service %[1]q (securereg).
# Save it as %[1]s-policy.hcl, then create the policy and a token for the service:
#   consul acl policy create -name %[1]s -description "go-micro service %[1]s" -rules @%[1]s-policy.hcl
#   consul acl token create -description "%[1]s" -policy-name %[1]s
# Give the service the token's SecretID through a file (CONSUL_HTTP_TOKEN_FILE, mode 0600).
%[2]s`, s, rules)
	return exitOK
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }
