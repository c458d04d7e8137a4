package deployer

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/docker/docker/client"
)

// TestHealthyWhenSocketRefusesUser drives the real Docker client through a
// dialer that fails the way connect(2) does on a socket whose group
// hookd's user lacks: Healthy names the fix, the log says it once, and a
// socket that answers again clears it. An engine that is merely down keeps
// hookd healthy (only not ready).
func TestHealthyWhenSocketRefusesUser(t *testing.T) {
	var refuse atomic.Pointer[net.OpError] // the dial error, or nil to connect
	dial := func(ctx context.Context, _, _ string) (net.Conn, error) {
		if err := refuse.Load(); err != nil {
			return nil, err
		}
		server, conn := net.Pipe()
		go serveOnePing(server)
		return conn, nil
	}
	cli, err := client.NewClientWithOpts(client.WithHost("unix:///var/run/docker.sock"), client.WithDialContext(dial),
		client.WithVersion("1.41"))
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	var logs bytes.Buffer
	d := rig{Logger: slog.New(slog.NewTextHandler(&logs, nil))}.deployer(t, cli)
	ctx := context.Background()

	denied := &net.OpError{Op: "dial", Net: "unix", Err: os.NewSyscallError("connect", syscall.EACCES)}
	refuse.Store(denied)
	for range 2 {
		if err := d.Ready(ctx); err == nil {
			t.Fatal("Ready() = nil with the socket refusing hookd")
		}
	}
	if err := d.Healthy(); !errors.Is(err, ErrSocketDenied) || !strings.Contains(err.Error(), "DOCKER_GID") {
		t.Errorf("Healthy() = %v, want ErrSocketDenied naming DOCKER_GID", err)
	}
	if n := strings.Count(logs.String(), "permission denied on the Docker socket"); n != 1 {
		t.Errorf("log explains the refused socket %d times over two checks, want once:\n%s", n, logs.String())
	}

	refuse.Store(&net.OpError{Op: "dial", Net: "unix", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)})
	if err := d.Ready(ctx); err == nil {
		t.Fatal("Ready() = nil with the engine down")
	}
	if err := d.Healthy(); err != nil {
		t.Errorf("Healthy() = %v with the engine down, want nil: a restarting engine is not hookd's fault", err)
	}

	refuse.Store(denied)
	_ = d.Ready(ctx)
	refuse.Store(nil)
	if err := d.ping(ctx); err != nil {
		t.Fatalf("ping with the socket answering: %v", err)
	}
	if err := d.Healthy(); err != nil {
		t.Errorf("Healthy() = %v once the socket answers, want nil", err)
	}
}

// serveOnePing answers one GET /_ping like the engine does.
func serveOnePing(c net.Conn) {
	defer c.Close()
	buf := make([]byte, 4096)
	_, _ = c.Read(buf)
	_, _ = c.Write([]byte("HTTP/1.1 200 OK\r\nApi-Version: 1.41\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nConnection: close\r\n\r\nOK"))
}
