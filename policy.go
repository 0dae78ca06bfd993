package securereg

import (
	"fmt"
	"regexp"
	"strings"
)

// serviceName is what Consul accepts as a service name, and keeps a name
// from breaking out of the quoted HCL string.
var serviceName = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$`)

// ACLPolicy returns the least-privilege Consul ACL policy (HCL rules) for a
// go-micro service that registers as service: write on itself, read on all
// nodes (the health endpoints need it), and read on the services it
// discovers. A nil discover means every service (service_prefix ""), an
// empty non-nil slice none, otherwise the named ones. It returns an error
// wrapping [ErrInvalidConfig] for a name Consul would not accept.
func ACLPolicy(service string, discover []string) (string, error) {
	for _, n := range append([]string{service}, discover...) {
		if !serviceName.MatchString(n) {
			return "", fmt.Errorf("securereg: %q is not a valid service name; use letters, digits, dots, dashes and underscores: %w", n, ErrInvalidConfig)
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "service %q {\n  policy = \"write\"\n}\n", service)
	b.WriteString("node_prefix \"\" {\n  policy = \"read\"\n}\n")
	switch {
	case discover == nil:
		b.WriteString("service_prefix \"\" {\n  policy = \"read\"\n}\n")
	default:
		for _, d := range discover {
			if d == service {
				continue
			}
			fmt.Fprintf(&b, "service %q {\n  policy = \"read\"\n}\n", d)
		}
	}
	return b.String(), nil
}
