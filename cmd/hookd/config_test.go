package main

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadConfigPrecedence(t *testing.T) {
	file := writeFile(t, "hookd.yaml", `
listen: ":9000"
webhook_secret: [file-secret-1, file-secret-2]
poll_interval: 10m
health_timeout: 90s
log_format: json
`)
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want func(c Config) string // returns a mismatch description or ""
	}{
		{
			name: "defaults",
			env:  map[string]string{"HOOKD_WEBHOOK_SECRET": "0123456789"},
			want: func(c Config) string {
				if c.Listen != ":8080" || c.PollInterval != 5*time.Minute || c.RegistryHost != "ghcr.io" ||
					c.HealthTimeout != 60*time.Second || c.StateDir != "/var/lib/hookd" || c.MaxBodyBytes != 1<<20 ||
					c.Concurrency != 1 || c.LogFormat != "text" {
					return "defaults not applied"
				}
				return ""
			},
		},
		{
			name: "file",
			args: []string{"--config", file},
			want: func(c Config) string {
				if c.Listen != ":9000" || c.PollInterval != 10*time.Minute || c.HealthTimeout != 90*time.Second || c.LogFormat != "json" {
					return "file values not applied"
				}
				if !slices.Equal(c.WebhookSecrets, []string{"file-secret-1", "file-secret-2"}) {
					return "secret list from file not applied"
				}
				return ""
			},
		},
		{
			name: "environment over file, HOOKD_CONFIG",
			env: map[string]string{
				"HOOKD_CONFIG": file, "HOOKD_LISTEN": "127.0.0.1:7000",
				"HOOKD_WEBHOOK_SECRET": "env-secret-a, env-secret-b", "HOOKD_POLL_INTERVAL": "0",
			},
			want: func(c Config) string {
				if c.Listen != "127.0.0.1:7000" || c.PollInterval != 0 || c.LogFormat != "json" {
					return "environment did not win over the file"
				}
				if !slices.Equal(c.WebhookSecrets, []string{"env-secret-a", "env-secret-b"}) {
					return "comma-separated secrets not split"
				}
				return ""
			},
		},
		{
			name: "flags over environment",
			args: []string{"--config", file, "--listen", "127.0.0.1:6000", "--log-format", "text"},
			env:  map[string]string{"HOOKD_LISTEN": "127.0.0.1:7000"},
			want: func(c Config) string {
				if c.Listen != "127.0.0.1:6000" || c.LogFormat != "text" {
					return "flags did not win"
				}
				return ""
			},
		},
		{
			name: "secret from _FILE, one per line",
			env: map[string]string{
				"HOOKD_WEBHOOK_SECRET_FILE": writeFile(t, "secret", "line-secret-1\n\nline-secret-2\n"),
				"HOOKD_API_TOKEN_FILE":      writeFile(t, "token", "0123456789abcdef0123\n"),
			},
			want: func(c Config) string {
				if !slices.Equal(c.WebhookSecrets, []string{"line-secret-1", "line-secret-2"}) {
					return "secret file not read line by line"
				}
				if !slices.Equal(c.APITokens, []string{"0123456789abcdef0123"}) {
					return "token file: trailing newline kept"
				}
				return ""
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := loadConfig(tt.args, env(tt.env), &bytes.Buffer{})
			if err != nil {
				t.Fatalf("loadConfig() error = %v", err)
			}
			if msg := tt.want(c); msg != "" {
				t.Errorf("loadConfig() = %+v: %s", c, msg)
			}
		})
	}
}

func TestLoadConfigErrors(t *testing.T) {
	typo := writeFile(t, "typo.yaml", "webhook_secret: 0123456789\nlisen: \":9000\"\n")
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want []string // every one must be in the error
	}{
		{
			name: "no secret",
			want: []string{"webhook_secret (HOOKD_WEBHOOK_SECRET) is required"},
		},
		{
			name: "unknown yaml key names key and line",
			args: []string{"--config", typo},
			want: []string{`line 2: unknown key "lisen"`},
		},
		{
			name: "every problem listed at once",
			env: map[string]string{
				"HOOKD_WEBHOOK_SECRET": "0123456789", "HOOKD_POLL_INTERVAL": "often",
				"HOOKD_LISTEN": "8080", "HOOKD_LOG_FORMAT": "xml", "HOOKD_HEALTH_TIMEOUT": "-1s",
				"HOOKD_CONCURRENCY": "0",
			},
			want: []string{"HOOKD_POLL_INTERVAL", "listen:", "log_format:", "health_timeout:", "concurrency:"},
		},
		{
			name: "secret and secret file both set",
			env: map[string]string{
				"HOOKD_WEBHOOK_SECRET": "0123456789", "HOOKD_WEBHOOK_SECRET_FILE": "/nonexistent",
			},
			want: []string{"set HOOKD_WEBHOOK_SECRET or HOOKD_WEBHOOK_SECRET_FILE, not both"},
		},
		{
			name: "missing secret file named",
			env:  map[string]string{"HOOKD_WEBHOOK_SECRET_FILE": "/nonexistent/secret"},
			want: []string{"HOOKD_WEBHOOK_SECRET_FILE", "/nonexistent/secret"},
		},
		{
			name: "missing config file",
			args: []string{"--config", "/nonexistent/hookd.yaml"},
			env:  map[string]string{"HOOKD_WEBHOOK_SECRET": "0123456789"},
			want: []string{"/nonexistent/hookd.yaml"},
		},
		{
			name: "verify mode and trusted root checked before start",
			env: map[string]string{"HOOKD_WEBHOOK_SECRET": "0123456789", "HOOKD_VERIFY": "strict",
				"HOOKD_VERIFY_TRUSTED_ROOT_FILE": typo},
			want: []string{`verify: "strict" is not off, warn or enforce`, "verify_trusted_root_file: trusted root " + typo + ": line 1"},
		},
		{
			name: "short poll interval",
			env:  map[string]string{"HOOKD_WEBHOOK_SECRET": "0123456789", "HOOKD_POLL_INTERVAL": "1s"},
			want: []string{"poll_interval: must be 0 (off) or at least 10s"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := loadConfig(tt.args, env(tt.env), &bytes.Buffer{})
			var cfgErr *configError
			if !errors.As(err, &cfgErr) {
				t.Fatalf("loadConfig() error = %v, want a *configError", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("loadConfig() error = %q, want it to mention %q", err, w)
				}
			}
			if code := exitCode(err, &bytes.Buffer{}); code != 2 {
				t.Errorf("exitCode() = %d, want 2", code)
			}
		})
	}
}

func TestConfigErrorsNeverShowSecrets(t *testing.T) {
	const secret = "tiny" // too short: rejected
	_, err := loadConfig(nil, env(map[string]string{"HOOKD_WEBHOOK_SECRET": secret, "HOOKD_API_TOKEN": "short-token"}), &bytes.Buffer{})
	if err == nil {
		t.Fatal("loadConfig() accepted a 4-character secret")
	}
	if strings.Contains(err.Error(), secret) || strings.Contains(err.Error(), "short-token") {
		t.Errorf("loadConfig() error = %q, leaks a secret", err)
	}
}

func TestHelpDocumentsEverySetting(t *testing.T) {
	var out bytes.Buffer
	_, err := loadConfig([]string{"--help"}, env(nil), &out)
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("loadConfig(--help) error = %v, want flag.ErrHelp", err)
	}
	if code := exitCode(err, &bytes.Buffer{}); code != 0 {
		t.Errorf("exitCode(--help) = %d, want 0", code)
	}
	for _, s := range settings {
		if !strings.Contains(out.String(), s.env) || !strings.Contains(out.String(), s.key) {
			t.Errorf("--help does not document %s (%s)", s.key, s.env)
		}
	}
}

func TestUnknownFlagIsUsageError(t *testing.T) {
	_, err := loadConfig([]string{"--lisen", ":1"}, env(nil), &bytes.Buffer{})
	if code := exitCode(err, &bytes.Buffer{}); code != 2 {
		t.Errorf("exitCode(unknown flag) = %d, want 2 (err %v)", code, err)
	}
}

// TestExampleConfigLoads keeps deploy/hookd.example.yaml loadable by the
// real loader and complete: it mentions every key hookd knows.
func TestExampleConfigLoads(t *testing.T) {
	path := filepath.Join("..", "..", "deploy", "hookd.example.yaml")
	c, err := loadConfig([]string{"--config", path}, env(map[string]string{"HOOKD_WEBHOOK_SECRET": "0123456789"}), &bytes.Buffer{})
	if err != nil {
		t.Fatalf("loadConfig(%s) error = %v", path, err)
	}
	defaults, err := loadConfig(nil, env(map[string]string{"HOOKD_WEBHOOK_SECRET": "0123456789"}), &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(c, defaults) {
		t.Errorf("example config = %+v, want the defaults it documents %+v", c, defaults)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range settings {
		if !strings.Contains(string(raw), s.key+":") {
			t.Errorf("%s does not document %s", path, s.key)
		}
	}
}

// TestReadmeDocumentsEverySetting keeps the README's configuration table
// in step with the settings hookd reads.
func TestReadmeDocumentsEverySetting(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range settings {
		row := "| `" + s.key + "` | `" + s.env
		if !strings.Contains(string(raw), row) {
			t.Errorf("README.md has no configuration row starting %q", row)
		}
	}
}
