package dockertest

import (
	"context"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestLddPaths(t *testing.T) {
	out := "\tlinux-vdso.so.1 (0x00007ffd4a5f2000)\n" +
		"\tlibzstd.so.1 => /lib/x86_64-linux-gnu/libzstd.so.1 (0x00007f0104b09000)\n" +
		"\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f0104927000)\n" +
		"\t/lib64/ld-linux-x86-64.so.2 (0x00007f0104bd8000)\n"
	want := []string{"/lib/x86_64-linux-gnu/libzstd.so.1", "/lib/x86_64-linux-gnu/libc.so.6", "/lib64/ld-linux-x86-64.so.2"}
	if got := lddPaths(out); !slices.Equal(got, want) {
		t.Errorf("lddPaths() = %q, want %q", got, want)
	}
}

// TestRunCaddy runs the Caddy image built from the host's binary in front
// of a test app on a network of the test, reaching it by its alias.
func TestRunCaddy(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cli := Docker(t)
	reg := NewRegistry(t)
	reg.PushApp(ctx, t, "hookd/caddy-upstream", "latest", App{Version: "behind-caddy"})
	net := CreateNetwork(ctx, t, cli)
	RunContainer(ctx, t, cli, ContainerOptions{Image: reg.Ref("hookd/caddy-upstream", "latest"), Network: net, Aliases: []string{"app"}})
	c := reg.RunCaddy(ctx, t, cli, net, "{\n\tadmin off\n\tauto_https off\n}\n:8080 {\n\treverse_proxy app:8080\n}\n", AppPort)
	WaitFor(t, 10*time.Second, "the app through caddy", func() (bool, string) {
		resp, err := http.Get("http://" + c.Addrs[0] + "/")
		if err != nil {
			return false, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return strings.TrimSpace(string(b)) == "behind-caddy" && resp.Header.Get("Server") == "Caddy",
			resp.Status + " " + string(b) + " server " + resp.Header.Get("Server")
	})
}
