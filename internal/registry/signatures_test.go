package registry

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	ggcr "github.com/google/go-containerregistry/pkg/registry"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/and3rn3t/hookd/internal/metrics"
	"github.com/and3rn3t/hookd/internal/sigstoretest"
)

// TestSignaturesFindsEveryFormat: bundles attached as OCI 1.1 referrers
// are found through the referrers API where the registry has it, and
// through the sha256-<hex> tag index where it does not (GHCR); cosign's
// legacy .sig tag is read too. Every request is counted, and a token is
// asked for as for any look-up.
func TestSignaturesFindsEveryFormat(t *testing.T) {
	for _, tc := range []struct {
		name      string
		referrers bool
	}{
		{"referrers API", true},
		{"referrers tag index (GHCR)", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			f := newFakeRegistry(t, authBearer, ggcr.WithReferrersSupport(tc.referrers))
			img := randomImage(t)
			f.push(t, "o/app:latest", img)
			digest := mustDigest(t, img)
			admin := f.admin + "/o/app"
			bundle := []byte(`{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json"}`)
			sigstoretest.AttachBundle(ctx, t, admin, digest, bundle)
			legacy := []sigstoretest.CosignSignature{
				{Payload: []byte(`{"critical":{"n":1}}`), Annotations: map[string]string{"dev.cosignproject.cosign/signature": "c2ln"}},
				{Payload: []byte(`{"critical":{"n":2}}`), Annotations: map[string]string{"dev.sigstore.cosign/certificate": "PEM"}},
			}
			sigstoretest.AttachCosign(ctx, t, admin, digest, legacy)
			f.requests()

			m := metrics.New(prometheus.NewRegistry(), metrics.BuildInfo{})
			c := newClient(t, Config{Metrics: m})
			sigs, err := c.Signatures(ctx, f.host+"/o/app", digest)
			if err != nil {
				t.Fatalf("Signatures: %v", err)
			}
			if len(sigs) != 3 {
				t.Fatalf("Signatures = %d signatures %+v, want the bundle and two cosign layers", len(sigs), sigs)
			}
			if sigs[0].Format != FormatBundle || !bytes.Equal(sigs[0].Bundle, bundle) || !strings.HasPrefix(sigs[0].Source, "referrer sha256:") {
				t.Errorf("signature 0 = %+v, want the bundle from its referrer", sigs[0])
			}
			for i, want := range legacy {
				got := sigs[1+i]
				if got.Format != FormatCosign || !bytes.Equal(got.Payload, want.Payload) || fmt.Sprint(got.Annotations) != fmt.Sprint(want.Annotations) {
					t.Errorf("signature %d = %+v, want cosign layer %+v", 1+i, got, want)
				}
			}
			reqs := f.requests()
			referrers := "GET /v2/o/app/referrers/" + digest
			fallback := "GET /v2/o/app/manifests/" + strings.Replace(digest, ":", "-", 1)
			if !slices.Contains(reqs, referrers) {
				t.Errorf("requests %v do not ask the referrers API first", reqs)
			}
			if got := slices.Contains(reqs, fallback); got == tc.referrers {
				t.Errorf("requests %v: tag index read = %v, want %v", reqs, got, !tc.referrers)
			}
			if !slices.Contains(reqs, "GET /token") {
				t.Errorf("requests %v: no token asked for", reqs)
			}
			if n := testutil.ToFloat64(m.RegistryRequests.WithLabelValues(f.host, "GET", "200")); n < 4 {
				t.Errorf("registry requests counted{GET,200} = %v, want every request of the look-up", n)
			}
		})
	}
}

// TestSignaturesUnsigned: an image with no signature anywhere has none,
// which is no error.
func TestSignaturesUnsigned(t *testing.T) {
	f := newFakeRegistry(t, authNone)
	img := randomImage(t)
	f.push(t, "o/app:latest", img)
	sigs, err := newClient(t, Config{}).Signatures(context.Background(), f.host+"/o/app", mustDigest(t, img))
	if err != nil || len(sigs) != 0 {
		t.Errorf("Signatures(unsigned) = %v, %v, want none and no error", sigs, err)
	}
}

// TestSignaturesBounded: whoever can push can attach any number of
// artifacts; hookd reads at most 16 bundles, skips oversized ones and
// artifacts that are no Sigstore bundle.
func TestSignaturesBounded(t *testing.T) {
	ctx := context.Background()
	f := newFakeRegistry(t, authNone, ggcr.WithReferrersSupport(true))
	img := randomImage(t)
	f.push(t, "o/app:latest", img)
	digest := mustDigest(t, img)
	admin := f.admin + "/o/app"
	sigstoretest.AttachBundle(ctx, t, admin, digest, bytes.Repeat([]byte("x"), maxBundleBytes+1))
	for i := range 20 {
		sigstoretest.AttachBundle(ctx, t, admin, digest, fmt.Appendf(nil, `{"n":%d}`, i))
	}
	sigs, err := newClient(t, Config{}).Signatures(ctx, f.host+"/o/app", digest)
	if err != nil {
		t.Fatal(err)
	}
	if len(sigs) != maxSignatures {
		t.Errorf("Signatures = %d, want at most %d", len(sigs), maxSignatures)
	}
	for _, s := range sigs {
		if len(s.Bundle) > maxBundleBytes {
			t.Errorf("a bundle of %d bytes was read, want none over %d", len(s.Bundle), maxBundleBytes)
		}
	}
}

// TestSignaturesRegistryDown: a registry that cannot be reached is an
// error (no verdict), and starts the backoff every look-up respects.
func TestSignaturesRegistryDown(t *testing.T) {
	c := newClient(t, Config{})
	host := "127.0.0.1:1" // nothing listens
	_, err := c.Signatures(context.Background(), host+"/o/app", "sha256:"+strings.Repeat("a", 64))
	var we *WaitError
	if !errors.As(err, &we) || !errors.Is(err, ErrBackoff) {
		t.Fatalf("Signatures(registry down) = %v, want a backoff", err)
	}
	if _, err := c.Head(context.Background(), host+"/o/app:latest"); !errors.Is(err, ErrBackoff) {
		t.Errorf("Head right after = %v, want it held back by the same backoff", err)
	}
}
