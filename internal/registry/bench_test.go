package registry

import (
	"context"
	"net/http"
	"testing"

	"github.com/and3rn3t/hookd/internal/metrics"
)

// BenchmarkCheck reports what one poll of one target costs the registry and
// the network: requests, response body bytes and wire bytes (both
// directions, headers included) per check, against the in-process registry
// behind a GHCR-style Bearer challenge, for a multi-arch tag that has not
// changed.
func BenchmarkCheck(b *testing.B) {
	ctx := context.Background()
	m := metrics.Discard()
	run := func(b *testing.B, f *fakeRegistry, check func() error) {
		b.Helper()
		f.requests()
		f.bodyBytes()
		f.wire.Store(0)
		b.ReportAllocs()
		for b.Loop() {
			if err := check(); err != nil {
				b.Fatal(err)
			}
		}
		n := float64(b.N)
		b.ReportMetric(float64(len(f.requests()))/n, "requests/op")
		b.ReportMetric(float64(f.bodyBytes())/n, "body-B/op")
		b.ReportMetric(float64(f.wire.Load())/n, "wire-B/op")
	}
	setup := func(b *testing.B) *fakeRegistry {
		f := newFakeRegistry(b, authBearer)
		idx, _, _ := multiArch(b)
		f.push(b, "o/app:latest", idx)
		return f
	}

	b.Run("head/steady", func(b *testing.B) {
		f := setup(b)
		c := newClient(b, Config{Metrics: m})
		if _, err := c.Head(ctx, f.ref("o/app:latest")); err != nil {
			b.Fatal(err)
		}
		run(b, f, func() error { _, err := c.Head(ctx, f.ref("o/app:latest")); return err })
	})
	b.Run("head/first", func(b *testing.B) {
		// A new client every time: ping, token and HEAD (hookd's first
		// check of a repository after start-up).
		f := setup(b)
		tr := http.DefaultTransport.(*http.Transport).Clone()
		b.Cleanup(tr.CloseIdleConnections)
		run(b, f, func() error {
			_, err := newClient(b, Config{Metrics: m, Transport: tr}).Head(ctx, f.ref("o/app:latest"))
			return err
		})
	})
	b.Run("get/head-refused", func(b *testing.B) {
		f := setup(b)
		f.setIntercept(func(w http.ResponseWriter, r *http.Request) bool {
			if r.Method == http.MethodHead {
				w.WriteHeader(http.StatusMethodNotAllowed)
				return true
			}
			return false
		})
		c := newClient(b, Config{Metrics: m})
		if _, err := c.Head(ctx, f.ref("o/app:latest")); err != nil {
			b.Fatal(err)
		}
		run(b, f, func() error { _, err := c.Head(ctx, f.ref("o/app:latest")); return err })
	})
	b.Run("platform", func(b *testing.B) {
		// Only when the index digest changed: index plus one platform manifest.
		f := setup(b)
		c := newClient(b, Config{Metrics: m})
		if _, _, err := c.Platform(ctx, f.ref("o/app:latest")); err != nil {
			b.Fatal(err)
		}
		run(b, f, func() error { _, _, err := c.Platform(ctx, f.ref("o/app:latest")); return err })
	})
}
