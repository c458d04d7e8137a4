package dockertest

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"runtime"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/client"
	"github.com/docker/go-connections/nat"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// CaddyBinary is where Debian's caddy package puts Caddy; scripts/test.sh
// installs the package when it is missing.
const CaddyBinary = "/usr/bin/caddy"

// Caddy is a Caddy server in a container of the test.
type Caddy struct {
	ID, Name string
	// Addrs are the host addresses ("127.0.0.1:PORT") published for the
	// ports given to RunCaddy, in that order.
	Addrs []string
}

// RunCaddy runs Debian's Caddy with caddyfile in a container attached to
// network, publishes the given container ports ("8080/tcp") on 127.0.0.1,
// and waits until Caddy serves. Nothing can be pulled: the image is
// built here from the host's CaddyBinary and the libraries ldd lists for
// it, and pushed to r. Without the binary the test is skipped, or fails
// when HOOKD_INTEGRATION=1.
func (r *Registry) RunCaddy(ctx context.Context, t testing.TB, cli *client.Client, network, caddyfile string, ports ...string) Caddy {
	t.Helper()
	if _, err := os.Stat(CaddyBinary); err != nil {
		if os.Getenv("HOOKD_INTEGRATION") == "1" {
			t.Fatalf("HOOKD_INTEGRATION=1 but %s is missing (scripts/test.sh installs Debian's caddy package): %v", CaddyBinary, err)
		}
		t.Skipf("%s is missing (install Debian's caddy package): %v", CaddyBinary, err)
	}
	if arch := EngineArch(); arch != runtime.GOARCH {
		t.Skipf("the engine runs %s, the host's caddy is %s", arch, runtime.GOARCH)
	}
	rootfs, err := caddyLayer()
	if err != nil {
		t.Fatalf("caddy image: %v", err)
	}
	conf, err := tarLayer(map[string][]byte{"etc/caddy/Caddyfile": []byte(caddyfile)}, false)
	if err != nil {
		t.Fatalf("caddy config layer: %v", err)
	}
	exposed := map[string]struct{}{}
	for _, p := range ports {
		exposed[p] = struct{}{}
	}
	img, err := mutate.ConfigFile(empty.Image, &v1.ConfigFile{
		Architecture: runtime.GOARCH,
		OS:           "linux",
		Created:      v1.Time{Time: time.Now().UTC()},
		Config: v1.Config{
			Cmd: []string{CaddyBinary, "run", "--config", "/etc/caddy/Caddyfile", "--adapter", "caddyfile"},
			// Caddy keeps its state under $HOME; the image has no user.
			Env:          []string{defaultPath, "HOME=/tmp", "XDG_CONFIG_HOME=/tmp", "XDG_DATA_HOME=/tmp"},
			ExposedPorts: exposed,
			Labels:       map[string]string{LabelKey: r.label},
		},
		RootFS: v1.RootFS{Type: "layers"},
	})
	if err != nil {
		t.Fatalf("caddy image config: %v", err)
	}
	img = mutate.MediaType(img, types.DockerManifestSchema2)
	img = mutate.ConfigMediaType(img, types.DockerConfigJSON)
	if img, err = mutate.AppendLayers(img, rootfs, conf); err != nil {
		t.Fatalf("caddy image layers: %v", err)
	}
	tag := "caddy-" + randomHex(4)
	ref := r.parseRef(t, "hookd/caddy", tag)
	if err := remote.Write(ref, img, remote.WithContext(ctx), remote.WithAuth(r.rigAuth)); err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}

	bind := map[string]string{}
	for _, p := range ports {
		bind[p] = ""
	}
	id, name := RunContainer(ctx, t, cli, ContainerOptions{
		Image:   r.Ref("hookd/caddy", tag),
		Name:    "caddy",
		Network: network,
		Ports:   bind,
	})
	c := Caddy{ID: id, Name: name}
	t.Cleanup(func() {
		if t.Failed() {
			logs, err := containerLogs(context.Background(), cli, id)
			t.Logf("caddy's log (%v):\n%s", err, logs)
		}
	})
	info, err := cli.ContainerInspect(ctx, id)
	if err != nil {
		t.Fatalf("inspect caddy: %v", err)
	}
	// Caddy says when it serves; asking it over HTTP would wait for an
	// upstream that may not run yet.
	WaitFor(t, 30*time.Second, "caddy serving", func() (bool, string) {
		logs, err := containerLogs(ctx, cli, id)
		if err != nil {
			return false, err.Error()
		}
		return strings.Contains(logs, "serving initial configuration"), logs
	})
	for _, p := range ports {
		var addr string
		for _, b := range info.NetworkSettings.Ports[nat.Port(p)] {
			if b.HostPort != "" {
				addr = "127.0.0.1:" + b.HostPort
				break
			}
		}
		if addr == "" {
			t.Fatalf("caddy: no host port for %s", p)
		}
		c.Addrs = append(c.Addrs, addr)
	}
	return c
}

// containerLogs returns what the container wrote so far, both streams
// (still framed: enough to search).
func containerLogs(ctx context.Context, cli *client.Client, id string) (string, error) {
	rc, err := cli.ContainerLogs(ctx, id, container.LogsOptions{ShowStdout: true, ShowStderr: true})
	if err != nil {
		return "", err
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, 1<<20))
	return string(b), err
}

var caddyBuild struct {
	once  sync.Once
	layer v1.Layer
	err   error
}

// caddyLayer holds CaddyBinary and every library ldd lists for it, at the
// paths the dynamic loader looks for them; built once per test binary.
func caddyLayer() (v1.Layer, error) {
	caddyBuild.once.Do(func() {
		out, err := exec.Command("ldd", CaddyBinary).Output()
		if err != nil {
			caddyBuild.err = fmt.Errorf("ldd %s: %w", CaddyBinary, err)
			return
		}
		files := map[string][]byte{}
		for _, p := range append(lddPaths(string(out)), CaddyBinary) {
			b, err := os.ReadFile(p) // follows the libraries' symlinks
			if err != nil {
				caddyBuild.err = fmt.Errorf("read %s: %w", p, err)
				return
			}
			files[strings.TrimPrefix(p, "/")] = b
		}
		files["tmp/"] = nil
		caddyBuild.layer, caddyBuild.err = tarLayer(files, true)
	})
	return caddyBuild.layer, caddyBuild.err
}

// lddPaths returns the absolute paths in ldd's output: "libc.so.6 =>
// /lib/…/libc.so.6 (0x…)" and "/lib64/ld-linux-x86-64.so.2 (0x…)".
func lddPaths(out string) []string {
	var paths []string
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		for i, w := range f {
			if strings.HasPrefix(w, "/") && (i == 0 || f[i-1] == "=>") {
				paths = append(paths, w)
			}
		}
	}
	return paths
}

// tarLayer makes a layer of files (path without leading slash → content;
// a path ending in "/" is a world-writable directory). Parent directories
// are added; files are executable. gz compresses it once, here.
func tarLayer(files map[string][]byte, gz bool) (v1.Layer, error) {
	names := make([]string, 0, len(files))
	dirs := map[string]bool{}
	for n := range files {
		names = append(names, n)
		for d := path.Dir(strings.TrimSuffix(n, "/")); d != "." && d != "/"; d = path.Dir(d) {
			dirs[d+"/"] = true
		}
	}
	for d := range dirs {
		if _, ok := files[d]; !ok {
			names = append(names, d)
		}
	}
	sort.Strings(names)
	var buf bytes.Buffer
	var w io.Writer = &buf
	var zw *gzip.Writer
	if gz {
		zw, _ = gzip.NewWriterLevel(&buf, gzip.BestSpeed)
		w = zw
	}
	tw := tar.NewWriter(w)
	for _, n := range names {
		if strings.HasSuffix(n, "/") {
			mode := int64(0o755)
			if _, explicit := files[n]; explicit {
				mode = 0o1777
			}
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: n, Mode: mode, ModTime: time.Unix(0, 0)}); err != nil {
				return nil, err
			}
			continue
		}
		b := files[n]
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: n, Mode: 0o755, Size: int64(len(b)), ModTime: time.Unix(0, 0)}); err != nil {
			return nil, err
		}
		if _, err := tw.Write(b); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	if zw != nil {
		if err := zw.Close(); err != nil {
			return nil, err
		}
	}
	data := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(data)), nil
	}, tarball.WithMediaType(types.DockerLayer))
}
