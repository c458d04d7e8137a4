package dockertest

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/client"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// App is a variant of the test image. The zero value is a healthy app
// answering "" on GET /.
type App struct {
	Version       string            // what GET / answers (e.g. "v2"), from /version in the image
	Unhealthy     bool              // the healthcheck always fails
	Crash         bool              // the process exits with code 3 ~300ms after start
	SlowStart     time.Duration     // /healthz (and so the healthcheck) fails until this long after start
	NoHealthcheck bool              // the image config has no Healthcheck
	NoDrain       bool              // on SIGTERM the process exits at once, dropping requests in flight
	Env           []string          // image default env, after PATH (e.g. "GREETING=hello")
	Cmd           []string          // image default Cmd; default ["/app", "serve"]
	Labels        map[string]string // image labels (hookd.test=<per-test value> is always added)
	Volumes       []string          // image-declared volumes (e.g. "/data")
	Attestation   bool              // PushIndex only: add attestation manifests like buildx provenance
}

// Healthcheck timings of the test image. A SlowStart app gets a start
// period of SlowStart+SlowStartGrace, so that it reports "starting", not
// "unhealthy", until it is ready.
const (
	HealthInterval = 200 * time.Millisecond
	HealthTimeout  = time.Second
	HealthRetries  = 2
	SlowStartGrace = 2 * time.Second
)

const defaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// PushApp builds the single-platform image of a (linux/<engine's
// architecture>, Docker schema 2 media types), pushes it as repo:tag and
// returns its manifest digest ("sha256:…"). repo is a path like "hookd/app".
// Failures fail the test.
func (r *Registry) PushApp(ctx context.Context, t testing.TB, repo, tag string, a App) string {
	t.Helper()
	arch := EngineArch()
	img := r.buildImage(t, a, arch, arch, false)
	ref := r.parseRef(t, repo, tag)
	if err := remote.Write(ref, img, remote.WithContext(ctx), remote.WithAuth(r.rigAuth)); err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatalf("digest of %s: %v", ref, err)
	}
	return d.String()
}

// PushIndex pushes a multi-platform OCI index of a (linux/amd64 and
// linux/arm64; with a.Attestation also one attestation manifest per
// platform, platform unknown/unknown, as buildx adds them) as repo:tag and
// returns the index digest. The engine's platform runs the app; the other
// platform carries the same binary and is never run. Failures fail the test.
func (r *Registry) PushIndex(ctx context.Context, t testing.TB, repo, tag string, a App) string {
	t.Helper()
	arch := EngineArch()
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for _, platArch := range []string{"amd64", "arm64"} {
		// The binary is always the engine's: the other platform's image is
		// never run, only chosen against.
		img := r.buildImage(t, a, arch, platArch, true)
		d, err := img.Digest()
		if err != nil {
			t.Fatalf("digest of %s image: %v", platArch, err)
		}
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{
			Add:        img,
			Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: platArch}},
		})
		if a.Attestation {
			att := attestationImage(t, d)
			idx = mutate.AppendManifests(idx, mutate.IndexAddendum{
				Add: att,
				Descriptor: v1.Descriptor{
					Platform: &v1.Platform{OS: "unknown", Architecture: "unknown"},
					Annotations: map[string]string{
						"vnd.docker.reference.type":   "attestation-manifest",
						"vnd.docker.reference.digest": d.String(),
					},
				},
			})
		}
	}
	ref := r.parseRef(t, repo, tag)
	if err := remote.WriteIndex(ref, idx, remote.WithContext(ctx), remote.WithAuth(r.rigAuth)); err != nil {
		t.Fatalf("push index %s: %v", ref, err)
	}
	d, err := idx.Digest()
	if err != nil {
		t.Fatalf("digest of index %s: %v", ref, err)
	}
	return d.String()
}

// Tag makes repo:dst point at what repo:src points at (image or index),
// like pushing the same build under a second tag; it returns the digest.
func (r *Registry) Tag(ctx context.Context, t testing.TB, repo, src, dst string) string {
	t.Helper()
	from := r.parseRef(t, repo, src)
	desc, err := remote.Get(from, remote.WithContext(ctx), remote.WithAuth(r.rigAuth))
	if err != nil {
		t.Fatalf("get %s: %v", from, err)
	}
	to := r.parseRef(t, repo, dst)
	if err := remote.Tag(to.Context().Tag(dst), desc, remote.WithContext(ctx), remote.WithAuth(r.rigAuth)); err != nil {
		t.Fatalf("tag %s as %s: %v", from, to, err)
	}
	return desc.Digest.String()
}

func (r *Registry) parseRef(t testing.TB, repo, tag string) name.Reference {
	t.Helper()
	ref, err := name.ParseReference(r.Ref(repo, tag), name.StrictValidation)
	if err != nil {
		t.Fatalf("reference %q: %v", r.Ref(repo, tag), err)
	}
	return ref
}

func (r *Registry) buildImage(t testing.TB, a App, binArch, platArch string, oci bool) v1.Image {
	t.Helper()
	layerType, manifestType, configType := types.DockerLayer, types.DockerManifestSchema2, types.DockerConfigJSON
	if oci {
		layerType, manifestType, configType = types.OCILayer, types.OCIManifestSchema1, types.OCIConfigJSON
	}
	bin, err := binaryLayer(binArch, layerType)
	if err != nil {
		t.Fatalf("test app layer: %v", err)
	}
	files, err := filesLayer(a, layerType)
	if err != nil {
		t.Fatalf("test app files layer: %v", err)
	}

	cmd := a.Cmd
	if len(cmd) == 0 {
		cmd = []string{"/app", "serve"}
	}
	labels := map[string]string{}
	for k, v := range a.Labels {
		labels[k] = v
	}
	labels[LabelKey] = r.label
	cfg := v1.Config{
		Cmd:          cmd,
		Env:          append([]string{defaultPath}, a.Env...),
		ExposedPorts: map[string]struct{}{AppPort: {}},
		Labels:       labels,
	}
	if !a.NoHealthcheck {
		cfg.Healthcheck = &v1.HealthConfig{
			Test:     []string{"CMD", "/app", "health"},
			Interval: HealthInterval,
			Timeout:  HealthTimeout,
			Retries:  HealthRetries,
		}
		if a.SlowStart > 0 {
			cfg.Healthcheck.StartPeriod = a.SlowStart + SlowStartGrace
		}
	}
	if len(a.Volumes) > 0 {
		cfg.Volumes = map[string]struct{}{}
		for _, v := range a.Volumes {
			cfg.Volumes[v] = struct{}{}
		}
	}
	img, err := mutate.ConfigFile(empty.Image, &v1.ConfigFile{
		Architecture: platArch,
		OS:           "linux",
		Created:      v1.Time{Time: time.Now().UTC()},
		Config:       cfg,
		RootFS:       v1.RootFS{Type: "layers"},
	})
	if err != nil {
		t.Fatalf("image config: %v", err)
	}
	img = mutate.MediaType(img, manifestType)
	img = mutate.ConfigMediaType(img, configType)
	img, err = mutate.AppendLayers(img, bin, files)
	if err != nil {
		t.Fatalf("image layers: %v", err)
	}
	return img
}

// attestationImage is an in-toto provenance manifest for subject, shaped
// like the ones buildx pushes next to each platform.
func attestationImage(t testing.TB, subject v1.Hash) v1.Image {
	t.Helper()
	stmt, err := json.Marshal(map[string]any{
		"_type":         "https://in-toto.io/Statement/v0.1",
		"predicateType": "https://slsa.dev/provenance/v0.2",
		"subject": []map[string]any{{
			"name":   "_",
			"digest": map[string]string{"sha256": subject.Hex},
		}},
		"predicate": map[string]any{"builder": map[string]string{"id": "hookd-dockertest"}},
	})
	if err != nil {
		t.Fatalf("attestation statement: %v", err)
	}
	layer := static.NewLayer(stmt, "application/vnd.in-toto+json")
	img, err := mutate.ConfigFile(empty.Image, &v1.ConfigFile{
		Architecture: "unknown",
		OS:           "unknown",
		RootFS:       v1.RootFS{Type: "layers"},
	})
	if err != nil {
		t.Fatalf("attestation config: %v", err)
	}
	img = mutate.MediaType(img, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.Append(img, mutate.Addendum{
		Layer:       layer,
		Annotations: map[string]string{"in-toto.io/predicate-type": "https://slsa.dev/provenance/v0.2"},
	})
	if err != nil {
		t.Fatalf("attestation layer: %v", err)
	}
	return img
}

// filesLayer holds the per-variant files that steer the test program.
func filesLayer(a App, mt types.MediaType) (v1.Layer, error) {
	files := map[string]string{"version": a.Version + "\n"}
	if a.Crash {
		files["crash"] = ""
	}
	if a.Unhealthy {
		files["unhealthy"] = ""
	}
	if a.NoDrain {
		files["nodrain"] = ""
	}
	if a.SlowStart > 0 {
		files["slowstart"] = a.SlowStart.String()
	}
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)

	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: "tmp/", Mode: 0o1777, ModTime: time.Unix(0, 0)}); err != nil {
		return nil, err
	}
	for _, n := range names {
		body := files[n]
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: n, Mode: 0o644, Size: int64(len(body)), ModTime: time.Unix(0, 0)}); err != nil {
			return nil, err
		}
		if _, err := io.WriteString(tw, body); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	b := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(b)), nil
	}, tarball.WithMediaType(mt))
}

// binaryLayer returns the layer holding /app for arch: built and compressed
// once per test binary and architecture, shared by every image.
func binaryLayer(arch string, mt types.MediaType) (v1.Layer, error) {
	gz, err := compressedBinaryTar(arch)
	if err != nil {
		return nil, err
	}
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(gz)), nil
	}, tarball.WithMediaType(mt))
}

type buildResult struct {
	once sync.Once
	gz   []byte
	err  error
}

var (
	buildsMu sync.Mutex
	builds   = map[string]*buildResult{}
)

func compressedBinaryTar(arch string) ([]byte, error) {
	buildsMu.Lock()
	b, ok := builds[arch]
	if !ok {
		b = &buildResult{}
		builds[arch] = b
	}
	buildsMu.Unlock()
	b.once.Do(func() {
		b.gz, b.err = buildBinaryTar(arch)
	})
	return b.gz, b.err
}

// buildBinaryTar compiles ./testapp for linux/arch and returns a gzipped tar
// holding it as /app. Building the test program is the rig's only exec.
func buildBinaryTar(arch string) ([]byte, error) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	dir, err := os.MkdirTemp("", "hookd-testapp-")
	if err != nil {
		return nil, fmt.Errorf("build test app: %w", err)
	}
	defer os.RemoveAll(dir)
	out := filepath.Join(dir, "app")

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	pkg, workDir := testAppPackage()
	cmd := exec.CommandContext(ctx, goBin, "build", "-trimpath", "-buildvcs=false", "-ldflags", "-s -w", "-o", out, pkg)
	cmd.Dir = workDir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+arch, "GOFLAGS="+buildFlags(os.Getenv("GOFLAGS")))
	if arch == "arm" {
		cmd.Env = append(cmd.Env, "GOARM=7")
	}
	if output, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("go build test app for %s: %w\n%s", arch, err, output)
	}
	bin, err := os.ReadFile(out)
	if err != nil {
		return nil, fmt.Errorf("read test app: %w", err)
	}

	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.BestSpeed)
	if err != nil {
		return nil, err
	}
	tw := tar.NewWriter(zw)
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "app", Mode: 0o755, Size: int64(len(bin)), ModTime: time.Unix(0, 0)}); err != nil {
		return nil, err
	}
	if _, err := tw.Write(bin); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// buildFlags drops from GOFLAGS what cannot apply to a static test program
// (-race needs cgo), keeping the rest (e.g. -mod=…).
func buildFlags(goflags string) string {
	var keep []string
	for _, f := range strings.Fields(goflags) {
		if f == "-race" || f == "--race" || strings.HasPrefix(f, "-race=") || f == "-msan" || f == "-asan" {
			continue
		}
		keep = append(keep, f)
	}
	return strings.Join(keep, " ")
}

// testAppPackage names the test program to build and the directory to build
// it from: the source directory next to this file when known (so that any
// working directory works), else the import path from the current directory
// (binaries built with -trimpath).
func testAppPackage() (pkg, dir string) {
	if _, file, _, ok := runtime.Caller(0); ok && filepath.IsAbs(file) {
		d := filepath.Join(filepath.Dir(file), "testapp")
		if _, err := os.Stat(d); err == nil {
			return ".", d
		}
	}
	return "github.com/and3rn3t/hookd/internal/dockertest/testapp", ""
}

var (
	engineArchOnce sync.Once
	engineArch     string
)

// EngineArch returns the GOARCH of the Docker engine's platform (asked
// once), or runtime.GOARCH when the engine cannot be asked.
func EngineArch() string {
	engineArchOnce.Do(func() {
		engineArch = runtime.GOARCH
		cli, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
		if err != nil {
			return
		}
		defer cli.Close()
		ctx, cancel := context.WithTimeout(context.Background(), pingTimeout)
		defer cancel()
		info, err := cli.Info(ctx)
		if err != nil {
			return
		}
		if a := goArch(info.Architecture); a != "" {
			engineArch = a
		}
	})
	return engineArch
}

// goArch maps the kernel's machine name (as the engine reports it) to GOARCH.
func goArch(machine string) string {
	switch machine {
	case "x86_64", "amd64":
		return "amd64"
	case "aarch64", "arm64":
		return "arm64"
	case "armv7l", "armv6l", "arm":
		return "arm"
	case "i386", "i686", "386":
		return "386"
	}
	return ""
}
