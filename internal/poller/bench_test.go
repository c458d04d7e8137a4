package poller

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/docker/docker/api/types/image"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/and3rn3t/hookd/internal/deploy"
	"github.com/and3rn3t/hookd/internal/dockertest"
	"github.com/and3rn3t/hookd/internal/metrics"
	"github.com/and3rn3t/hookd/internal/registry"
)

// countingConn counts the bytes a connection reads and writes.
type countingConn struct {
	net.Conn
	n *atomic.Int64
}

func (c countingConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.n.Add(int64(n))
	return n, err
}

func (c countingConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	c.n.Add(int64(n))
	return n, err
}

// BenchmarkPollUnchanged measures what one check of an unchanged multi-arch
// tag costs, against the rig's registry behind a GHCR-style bearer challenge,
// next to what a plain `docker pull` of the same unchanged tag costs. Both
// are counted at the registry: requests and response body bytes per op. The
// poll also reports its wire bytes (headers included, both directions).
func BenchmarkPollUnchanged(b *testing.B) {
	ctx := context.Background()
	reg := dockertest.NewRegistry(b, dockertest.WithBearerAuth("bot", "right"))
	const repo = "hookd/bench"
	idx := reg.PushIndex(ctx, b, repo, "latest", dockertest.App{Version: "v1", Attestation: true})
	ref := reg.Ref(repo, "latest")

	perOp := func(b *testing.B, from, ops int) {
		b.Helper()
		recs := reg.Requests()[from:]
		var body int64
		for _, r := range recs {
			body += r.BytesOut
		}
		if len(recs) > 0 && b.N > 1 {
			var first []string
			for _, r := range recs[:min(len(recs), 2*len(recs)/ops)] {
				first = append(first, fmt.Sprintf("%s %s %d (%d B)", r.Method, r.Path, r.Status, r.BytesOut))
			}
			b.Logf("%d ops; requests of the first two: %s", ops, strings.Join(first, ", "))
		}
		b.ReportMetric(float64(len(recs))/float64(ops), "requests/op")
		b.ReportMetric(float64(body)/float64(ops), "bytes/op")
	}

	b.Run("poll", func(b *testing.B) {
		var wire atomic.Int64
		tr := http.DefaultTransport.(*http.Transport).Clone()
		dial := tr.DialContext
		tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := dial(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return countingConn{Conn: c, n: &wire}, nil
		}
		rc := registry.New(registry.Config{
			Keychain:  staticKeychain{"bot", "right"},
			Platform:  v1.Platform{OS: "linux", Architecture: dockertest.EngineArch()},
			Transport: tr,
		})
		targets := &fakeTargets{}
		targets.set(deploy.Target{Name: "bench", Image: reg.Host + "/" + repo, Tag: "latest", Digest: idx, ImageID: "sha256:unused"})
		sub := &fakeSubmitter{targets: targets}
		m := metrics.Discard()
		// A nanosecond's interval: every tick finds the tag due.
		p := New(Config{Interval: time.Nanosecond, Jitter: -1, Metrics: m}, targets, sub, rc)
		// Warm up: the first check pays for the token; steady state is
		// what every later check costs.
		p.tick(ctx)
		p.wg.Wait()

		from := len(reg.Requests())
		wire.Store(0)
		ops := 0
		for b.Loop() {
			p.tick(ctx)
			p.wg.Wait()
			ops++
		}
		perOp(b, from, ops)
		b.ReportMetric(float64(wire.Load())/float64(ops), "wire_bytes/op")
		if got := len(sub.requests()); got != 0 {
			b.Fatalf("poll of an unchanged tag submitted %d requests", got)
		}
	})

	b.Run("docker_pull", func(b *testing.B) {
		cli := dockertest.Docker(b)
		auth := reg.RegistryAuth("bot", "right")
		dockertest.Pull(ctx, b, cli, ref, auth) // the tag is now unchanged for the engine
		pull := func() {
			rc, err := cli.ImagePull(ctx, ref, image.PullOptions{RegistryAuth: auth})
			if err != nil {
				b.Fatalf("pull %s: %v", ref, err)
			}
			defer rc.Close()
			dec := json.NewDecoder(rc)
			for {
				var msg struct{ Error string }
				if err := dec.Decode(&msg); err == io.EOF {
					return
				} else if err != nil {
					b.Fatalf("pull %s: %v", ref, err)
				}
				if msg.Error != "" {
					b.Fatalf("pull %s: %s", ref, msg.Error)
				}
			}
		}
		from := len(reg.Requests())
		ops := 0
		for b.Loop() {
			pull()
			ops++
		}
		perOp(b, from, ops)
	})
}
