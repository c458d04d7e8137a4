package verify

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/and3rn3t/hookd/internal/deploy"
	"github.com/and3rn3t/hookd/internal/registry"
	"github.com/and3rn3t/hookd/internal/sigstoretest"
)

// tufRepo serves a TUF repository, signed in the test, whose one target
// is trusted_root.json, like Sigstore's public-good repository.
type tufRepo struct {
	root []byte // 1.root.json, the client's trust anchor
	srv  *httptest.Server
	mu   sync.Mutex
	hits int
}

func newTUFRepo(t *testing.T, trustedRoot []byte) *tufRepo {
	t.Helper()
	dir := t.TempDir()
	expires := time.Now().Add(7 * 24 * time.Hour)
	root := metadata.Root(expires)
	signers := map[string]signature.Signer{}
	for _, role := range []string{metadata.ROOT, metadata.TARGETS, metadata.SNAPSHOT, metadata.TIMESTAMP} {
		pub, priv, err := ed25519.GenerateKey(nil)
		if err != nil {
			t.Fatal(err)
		}
		key, err := metadata.KeyFromPublicKey(pub)
		if err != nil {
			t.Fatal(err)
		}
		if err := root.Signed.AddKey(key, role); err != nil {
			t.Fatal(err)
		}
		if signers[role], err = signature.LoadSigner(priv, crypto.Hash(0)); err != nil {
			t.Fatal(err)
		}
	}
	targets := metadata.Targets(expires)
	info, err := metadata.TargetFile().FromBytes("trusted_root.json", trustedRoot, "sha256")
	if err != nil {
		t.Fatal(err)
	}
	targets.Signed.Targets["trusted_root.json"] = info
	sum := sha256.Sum256(trustedRoot)
	write := func(name string, data []byte) {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("targets/"+hex.EncodeToString(sum[:])+".trusted_root.json", trustedRoot)
	sign := func(name string, m interface {
		Sign(signature.Signer) (*metadata.Signature, error)
		ToBytes(bool) ([]byte, error)
	}, role string) []byte {
		t.Helper()
		if _, err := m.Sign(signers[role]); err != nil {
			t.Fatal(err)
		}
		b, err := m.ToBytes(false)
		if err != nil {
			t.Fatal(err)
		}
		write(name, b)
		return b
	}
	r := &tufRepo{root: sign("1.root.json", root, metadata.ROOT)}
	sign("1.targets.json", targets, metadata.TARGETS)
	sign("1.snapshot.json", metadata.Snapshot(expires), metadata.SNAPSHOT)
	sign("timestamp.json", metadata.Timestamp(expires), metadata.TIMESTAMP)
	files := http.FileServer(http.Dir(dir))
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.mu.Lock()
		r.hits++
		r.mu.Unlock()
		files.ServeHTTP(w, req)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *tufRepo) requests() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := r.hits
	r.hits = 0
	return n
}

// TestTUF: the trusted root comes from a TUF repository, verified from
// the root hookd starts with; it is fetched when first needed, kept for a
// day, cached on disk so that a restarted hookd verifies without the
// repository, and kept when a refresh fails.
func TestTUF(t *testing.T) {
	ss := sigstoretest.New(t)
	trusted, err := ss.TrustedRoot(t, false).MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	repo := newTUFRepo(t, trusted)
	cache := filepath.Join(t.TempDir(), "state", "sigstore")
	now := time.Now()
	clock := func() time.Time { return now }
	newTrust := func() *TUF {
		return NewTUF(TUFConfig{CacheDir: cache, RepositoryURL: repo.srv.URL, Root: repo.root, Now: clock})
	}
	ctx := context.Background()

	tr := newTrust()
	if n := repo.requests(); n != 0 {
		t.Fatalf("NewTUF made %d requests, want none before a root is needed", n)
	}
	roots, err := tr.Roots(ctx)
	if err != nil {
		t.Fatalf("Roots: %v", err)
	}
	if n := repo.requests(); n == 0 {
		t.Error("first Roots made no request to the TUF repository")
	}
	// The root works: a bundle from the same deployment verifies.
	r := newRig(t)
	r.ss = ss
	r.reg.sigs[digest] = []registry.Signature{r.bundle(t, digest, ownWorkflow)}
	if err := r.gate(t, Config{Trust: tr}).Admit(ctx, job(deploy.TriggerPoll)); err != nil {
		t.Errorf("Admit with the TUF root = %v, want admitted", err)
	}
	if _, err := tr.Roots(ctx); err != nil || repo.requests() != 0 {
		t.Errorf("Roots again within a day: %v, want no request", err)
	}
	if _, err := os.Stat(cache); err != nil {
		t.Errorf("TUF cache %s: %v", cache, err)
	}

	// A restart while the repository is down: the cache serves.
	repo.srv.Close()
	again, err := newTrust().Roots(ctx)
	if err != nil || len(again) != 1 {
		t.Fatalf("Roots after a restart with the repository down = %v, %v, want the cached root", again, err)
	}
	// A day later the refresh fails (repository down, cache gone): the
	// root it had is kept.
	now = now.Add(25 * time.Hour)
	if err := os.RemoveAll(cache); err != nil {
		t.Fatal(err)
	}
	kept, err := tr.Roots(ctx)
	if err != nil || len(kept) != 1 || kept[0] != roots[0] {
		t.Errorf("Roots after a failed refresh = %v, %v, want the root fetched before", kept, err)
	}
	// A hookd that never had a root cannot verify, and says where it looked.
	empty := NewTUF(TUFConfig{CacheDir: t.TempDir(), RepositoryURL: repo.srv.URL, Root: repo.root})
	if _, err := empty.Roots(ctx); err == nil {
		t.Error("Roots with no cache and the repository down = nil error")
	}
}
