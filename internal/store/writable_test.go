package store

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/and3rn3t/hookd/internal/deploy"
)

// TestWritableReflectsAFullDisk fills a real (tmpfs) file system under the
// state file: Writable must say so without writing, and recover once space
// is freed.
func TestWritableReflectsAFullDisk(t *testing.T) {
	dir := smallFS(t, "2m")
	s, err := Open(filepath.Join(dir, "hookd.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Writable(); err != nil {
		t.Fatalf("Writable() on an empty file system = %v, want nil", err)
	}
	filler := filepath.Join(dir, "filler")
	fill(t, filler)
	err = s.Writable()
	if err == nil || !strings.Contains(err.Error(), "bytes free") || !strings.Contains(err.Error(), dir) {
		t.Errorf("Writable() on a full file system = %v, want an error naming %s and the free bytes", err, dir)
	}
	// What a delivery would have met: the write fails.
	if perr := s.PutJob(context.Background(), job("x", "web", time.Now(), deploy.StatusQueued)); perr == nil {
		t.Logf("note: a small write still fitted in the file's own pages")
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	if err := s.Writable(); err != nil {
		t.Errorf("Writable() once space is freed = %v, want nil", err)
	}
}

// smallFS mounts a tmpfs of size under a temporary directory and unmounts
// it at cleanup. Mounting needs root (CI runs as root); elsewhere the test
// is skipped unless HOOKD_INTEGRATION=1 says it must run.
func smallFS(t *testing.T, size string) string {
	t.Helper()
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size="+size+",mode=0700"); err != nil {
		if os.Getenv("HOOKD_INTEGRATION") == "1" {
			t.Fatalf("mount a tmpfs for a full-disk test (needs root): %v", err)
		}
		t.Skipf("cannot mount a tmpfs (needs root; HOOKD_INTEGRATION=1 makes this a failure): %v", err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}

// fill writes to path until the file system is full.
func fill(t *testing.T, path string) {
	t.Helper()
	cmd := exec.Command("dd", "if=/dev/zero", "of="+path, "bs=64k")
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "No space left") {
		t.Fatalf("filling %s: %v: %s", path, err, out)
	}
}
