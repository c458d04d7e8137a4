package main

import (
	"context"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/and3rn3t/hookd/internal/dockertest"
)

// startCaddy runs Debian's Caddy as a reverse proxy to upstream and returns
// its address.
func startCaddy(t *testing.T, upstream string) string {
	t.Helper()
	bin, err := exec.LookPath("caddy")
	if err != nil {
		if os.Getenv("HOOKD_INTEGRATION") != "" {
			t.Fatal("caddy not installed (scripts/caddy.sh installs it)")
		}
		t.Skip("caddy not installed")
	}
	dir := t.TempDir()
	addr := freeAddr(t)
	conf := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(conf, []byte("{\n\tadmin off\n\tauto_https off\n}\nhttp://"+addr+" {\n\treverse_proxy "+upstream+"\n}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "run", "--adapter", "caddyfile", "--config", conf)
	cmd.Env = []string{"HOME=" + dir, "XDG_DATA_HOME=" + dir, "XDG_CONFIG_HOME=" + dir}
	logs := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("caddy log:\n%s", logs.String())
		}
	})
	dockertest.WaitFor(t, 20*time.Second, "caddy", func() (bool, string) {
		return answers("http://"+addr+"/healthz", http.StatusOK)
	})
	return addr
}

// clientFrom returns an HTTP client whose connections come from the
// loopback address ip, as from another host.
func clientFrom(ip string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: d.DialContext}}
}

// TestFailedLoginsBehindAProxy: behind Caddy, ten bad tokens from one
// client lock out that client, whatever X-Forwarded-For it sends, and with
// trusted_proxies set nobody else: not another client behind the same
// proxy, not the local CLI. Without the setting everyone shares the
// proxy's address and is locked out together.
func TestFailedLoginsBehindAProxy(t *testing.T) {
	const token = "proxy-test-token-0123456789"
	for _, tc := range []struct {
		name    string
		trusted string
		others  int // what another client and the CLI get afterwards
	}{
		{"trusted_proxies set", "127.0.0.1", http.StatusOK},
		{"trusted_proxies unset", "", http.StatusTooManyRequests},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := startDaemon(context.Background(), t, map[string]string{
				"DOCKER_HOST":           noDocker,
				"HOOKD_API_TOKEN":       token,
				"HOOKD_TRUSTED_PROXIES": tc.trusted,
			})
			proxy := "http://" + startCaddy(t, d.url[len("http://"):])
			get := func(c *http.Client, base, bearer, xff string) int {
				t.Helper()
				req, _ := http.NewRequest(http.MethodGet, base+"/api/v1/targets", nil)
				req.Header.Set("Authorization", "Bearer "+bearer)
				if xff != "" {
					req.Header.Set("X-Forwarded-For", xff)
				}
				resp, err := c.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				return resp.StatusCode
			}

			guesser := clientFrom("127.0.0.2")
			for i := range 10 {
				// A forged X-Forwarded-For per try must not make each
				// look like another client.
				if code := get(guesser, proxy, "wrong-token-"+string(rune('a'+i)), "203.0.113."+string(rune('1'+i%9))); code != http.StatusUnauthorized {
					t.Fatalf("bad token %d through the proxy = %d, want 401", i+1, code)
				}
			}
			if code := get(guesser, proxy, token, ""); code != http.StatusTooManyRequests {
				t.Errorf("the guesser with the right token after 10 failures = %d, want 429", code)
			}
			if code := get(clientFrom("127.0.0.3"), proxy, token, ""); code != tc.others {
				t.Errorf("another client behind the proxy = %d, want %d", code, tc.others)
			}
			if code := get(http.DefaultClient, d.url, token, ""); code != tc.others {
				t.Errorf("the local CLI, straight to hookd = %d, want %d", code, tc.others)
			}
		})
	}
}

// TestSecretFileReadableByOthers: a secret in a file every user can read
// is warned about at start, naming the file and the fix; one readable only
// by its owner (or group) is not.
func TestSecretFileReadableByOthers(t *testing.T) {
	for _, tc := range []struct {
		mode os.FileMode
		warn bool
	}{{0o644, true}, {0o640, false}, {0o600, false}} {
		t.Run(tc.mode.String(), func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "webhook-secret")
			if err := os.WriteFile(file, []byte(testSecret+"\n"), tc.mode); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(file, tc.mode); err != nil { // past the umask
				t.Fatal(err)
			}
			d := startDaemon(context.Background(), t, map[string]string{
				"DOCKER_HOST":               noDocker,
				"HOOKD_WEBHOOK_SECRET":      "",
				"HOOKD_WEBHOOK_SECRET_FILE": file,
			})
			logs := d.logs.String()
			warned := strings.Contains(logs, "secret file readable by every user") &&
				strings.Contains(logs, "file="+file) && strings.Contains(logs, "chmod 600 "+file)
			if warned != tc.warn {
				t.Errorf("mode %s: warned = %v, want %v; log:\n%s", tc.mode, warned, tc.warn, logs)
			}
			if strings.Contains(logs, testSecret) {
				t.Error("the log holds the secret")
			}
		})
	}
}
