package agent

import (
	"encoding/json"
	"path/filepath"
)

// Ports are the agent's listeners; -1 disables one.
type Ports struct {
	HTTP    int `json:"http"`
	HTTPS   int `json:"https"`
	DNS     int `json:"dns"`
	GRPC    int `json:"grpc"`
	GRPCTLS int `json:"grpc_tls"`
	SerfLAN int `json:"serf_lan"`
	SerfWAN int `json:"serf_wan"`
	Server  int `json:"server"`
}

// Config renders the agent's JSON configuration: a single server for
// dc1 with HTTPS only (unless plain is set), verify_incoming,
// verify_server_hostname, TLS 1.2 minimum and ACLs in default-deny mode.
// certDir and dataDir are paths as the agent sees them.
func Config(certDir, dataDir, clientAddr string, ports Ports, managementToken, agentToken string) ([]byte, error) {
	cfg := map[string]any{
		"datacenter":           "dc1",
		"node_name":            "consultest",
		"server":               true,
		"bootstrap_expect":     1,
		"data_dir":             dataDir,
		"bind_addr":            "127.0.0.1",
		"advertise_addr":       "127.0.0.1",
		"client_addr":          clientAddr,
		"log_level":            "info",
		"disable_update_check": true,
		"ui_config":            map[string]any{"enabled": false},
		"performance":          map[string]any{"raft_multiplier": 1},
		"ports":                ports,
		"tls": map[string]any{
			"defaults": map[string]any{
				"ca_file":         filepath.ToSlash(filepath.Join(certDir, "consul-agent-ca.pem")),
				"cert_file":       filepath.ToSlash(filepath.Join(certDir, "dc1-server-consul-0.crt")),
				"key_file":        filepath.ToSlash(filepath.Join(certDir, "dc1-server-consul-0.key")),
				"verify_incoming": true,
				"verify_outgoing": true,
				"tls_min_version": "TLSv1_2",
			},
			"internal_rpc": map[string]any{"verify_server_hostname": true},
		},
		"acl": map[string]any{
			"enabled":                  true,
			"default_policy":           "deny",
			"down_policy":              "extend-cache",
			"enable_token_persistence": false,
			"tokens": map[string]any{
				"initial_management": managementToken,
				// Without an agent token Consul 1.16.1 blocks
				// deregistration and anti-entropy ("Service
				// deregistration blocked by ACLs").
				"agent": agentToken,
			},
		},
	}
	return json.MarshalIndent(cfg, "", "  ")
}
