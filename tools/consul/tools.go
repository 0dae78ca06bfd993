//go:build tools

// Package tools pins the Consul server used by the integration tests:
// v1.16.1, the last MPL-2.0 release. Later releases (1.16.6 included) are
// BSL-licensed and must not be used. This module is separate so that
// Consul's ~230 modules stay out of the library's go.mod.
package tools

import _ "github.com/hashicorp/consul"
