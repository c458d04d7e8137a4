package store

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"github.com/and3rn3t/hookd/internal/deploy"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// clock is a settable test clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// openTemp opens a store in a fresh directory and closes it at cleanup.
func openTemp(t testing.TB, opts Options) *Store {
	t.Helper()
	s, err := Open(filepath.Join(t.TempDir(), "state", "hookd.db"), opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// txID returns the id of the last committed write transaction.
func txID(t *testing.T, s *Store) int {
	t.Helper()
	var id int
	if err := s.db.View(func(tx *bolt.Tx) error { id = tx.ID(); return nil }); err != nil {
		t.Fatalf("view: %v", err)
	}
	return id
}

func job(id, target string, created time.Time, st deploy.Status) deploy.Job {
	return deploy.Job{
		ID:        id,
		Target:    target,
		Kind:      "container",
		Image:     "ghcr.io/o/app:latest",
		Status:    st,
		CreatedAt: created,
		Request: deploy.Request{
			Repository: "ghcr.io/o/app", Tag: "latest", Trigger: deploy.TriggerWebhook,
			ID: "delivery-" + id, ReceivedAt: created,
		},
	}
}

func jobIDs(jobs []deploy.Job) []string {
	ids := make([]string, len(jobs))
	for i, j := range jobs {
		ids[i] = j.ID
	}
	return ids
}

func TestOpenCreatesPrivateDirAndFile(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "var", "lib", "hookd")
	path := filepath.Join(dir, "hookd.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer s.Close()
	for _, c := range []struct {
		path string
		want os.FileMode
	}{{dir, 0o700 | os.ModeDir}, {path, 0o600}} {
		fi, err := os.Stat(c.path)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode(); got != c.want {
			t.Errorf("mode of %s = %v, want %v", c.path, got, c.want)
		}
	}
}

func TestJobRoundTrip(t *testing.T) {
	ctx := context.Background()
	s := openTemp(t, Options{})
	created := time.Date(2025, 6, 1, 12, 0, 0, 123456789, time.UTC)
	want := job("j1", "web", created, deploy.StatusQueued)
	if err := s.PutJob(ctx, want); err != nil {
		t.Fatalf("PutJob: %v", err)
	}
	got, err := s.Job(ctx, "j1")
	if err != nil {
		t.Fatalf("Job: %v", err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Job(j1) = %+v, want %+v", got, want)
	}

	// An update replaces the job in place.
	want.Status = deploy.StatusSucceeded
	want.StartedAt = created.Add(time.Second)
	want.FinishedAt = created.Add(5 * time.Second)
	want.Phases = map[string]float64{"pull": 1.5, "swap": 0.25, "health": 3}
	want.DigestAfter = "sha256:" + strings.Repeat("a", 64)
	if err := s.PutJob(ctx, want); err != nil {
		t.Fatalf("PutJob update: %v", err)
	}
	got, err = s.Job(ctx, "j1")
	if err != nil {
		t.Fatalf("Job: %v", err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Job(j1) after update = %+v, want %+v", got, want)
	}
	all, err := s.Jobs(ctx, deploy.JobFilter{})
	if err != nil {
		t.Fatalf("Jobs: %v", err)
	}
	if len(all) != 1 {
		t.Errorf("Jobs() after update = %v, want one job", jobIDs(all))
	}

	if _, err := s.Job(ctx, "nope"); !errors.Is(err, deploy.ErrJobNotFound) {
		t.Errorf("Job(nope) error = %v, want ErrJobNotFound", err)
	}
	for _, bad := range []deploy.Job{{Target: "web"}, {ID: "x"}} {
		if err := s.PutJob(ctx, bad); err == nil {
			t.Errorf("PutJob(%+v) = nil, want an error", bad)
		}
	}
}

func TestJobsOrderAndFilter(t *testing.T) {
	ctx := context.Background()
	s := openTemp(t, Options{})
	base := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	// Inserted out of order: listing follows CreatedAt, not insertion.
	for _, j := range []deploy.Job{
		job("c", "web", base.Add(3*time.Minute), deploy.StatusSucceeded),
		job("a", "web", base.Add(1*time.Minute), deploy.StatusFailed),
		job("b", "db", base.Add(2*time.Minute), deploy.StatusUpToDate),
		job("e", "db", base.Add(5*time.Minute), deploy.StatusQueued),
		job("d", "web", base.Add(4*time.Minute), deploy.StatusRunning),
		job("old", "web", time.Date(1965, 1, 1, 0, 0, 0, 0, time.UTC), deploy.StatusSucceeded),
	} {
		if err := s.PutJob(ctx, j); err != nil {
			t.Fatalf("PutJob(%s): %v", j.ID, err)
		}
	}
	tests := []struct {
		f    deploy.JobFilter
		want []string
	}{
		{deploy.JobFilter{}, []string{"e", "d", "c", "b", "a", "old"}},
		{deploy.JobFilter{Limit: 2}, []string{"e", "d"}},
		{deploy.JobFilter{Target: "web"}, []string{"d", "c", "a", "old"}},
		{deploy.JobFilter{Target: "web", Limit: 3}, []string{"d", "c", "a"}},
		{deploy.JobFilter{Target: "db", Limit: 10}, []string{"e", "b"}},
		{deploy.JobFilter{Target: "nope"}, []string{}},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%+v", tt.f), func(t *testing.T) {
			got, err := s.Jobs(ctx, tt.f)
			if err != nil {
				t.Fatalf("Jobs: %v", err)
			}
			if ids := jobIDs(got); !reflect.DeepEqual(ids, tt.want) {
				t.Errorf("Jobs(%+v) = %v, want %v", tt.f, ids, tt.want)
			}
		})
	}
}

func TestJobMovesTarget(t *testing.T) {
	ctx := context.Background()
	s := openTemp(t, Options{})
	j := job("j", "old-name", time.Now(), deploy.StatusQueued)
	if err := s.PutJob(ctx, j); err != nil {
		t.Fatal(err)
	}
	j.Target = "new-name"
	if err := s.PutJob(ctx, j); err != nil {
		t.Fatal(err)
	}
	for target, want := range map[string]int{"old-name": 0, "new-name": 1} {
		got, err := s.Jobs(ctx, deploy.JobFilter{Target: target})
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != want {
			t.Errorf("Jobs(target=%s) = %v, want %d jobs", target, jobIDs(got), want)
		}
	}
}

func TestJobHistoryIsBoundedPerTarget(t *testing.T) {
	ctx := context.Background()
	s := openTemp(t, Options{JobsPerTarget: 3})
	base := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	at := func(i int) time.Time { return base.Add(time.Duration(i) * time.Minute) }
	put := func(j deploy.Job) {
		t.Helper()
		if err := s.PutJob(ctx, j); err != nil {
			t.Fatalf("PutJob(%s): %v", j.ID, err)
		}
	}
	list := func(target string) []string {
		t.Helper()
		got, err := s.Jobs(ctx, deploy.JobFilter{Target: target})
		if err != nil {
			t.Fatalf("Jobs: %v", err)
		}
		return jobIDs(got)
	}

	// A pending request older than the history window is kept.
	put(job("pending", "web", at(0), deploy.StatusQueued))
	for i := 1; i <= 6; i++ {
		put(job(fmt.Sprintf("w%d", i), "web", at(i), deploy.StatusSucceeded))
	}
	put(job("d1", "db", at(1), deploy.StatusFailed))
	put(job("d2", "db", at(2), deploy.StatusSucceeded))

	if got, want := list("web"), []string{"w6", "w5", "w4", "pending"}; !reflect.DeepEqual(got, want) {
		t.Errorf("web jobs = %v, want %v", got, want)
	}
	if got, want := list("db"), []string{"d2", "d1"}; !reflect.DeepEqual(got, want) {
		t.Errorf("db jobs = %v, want %v (another target's pruning must not touch it)", got, want)
	}
	if _, err := s.Job(ctx, "w1"); !errors.Is(err, deploy.ErrJobNotFound) {
		t.Errorf("Job(w1) error = %v, want ErrJobNotFound (pruned)", err)
	}

	// Once the pending job is final, it ages out like the others.
	pending := job("pending", "web", at(0), deploy.StatusSucceeded)
	put(pending)
	put(job("w7", "web", at(7), deploy.StatusSucceeded))
	if got, want := list("web"), []string{"w7", "w6", "w5"}; !reflect.DeepEqual(got, want) {
		t.Errorf("web jobs after the pending one finished = %v, want %v", got, want)
	}
	all, err := s.Jobs(ctx, deploy.JobFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := jobIDs(all), []string{"w7", "w6", "w5", "d2", "d1"}; !reflect.DeepEqual(got, want) {
		t.Errorf("all jobs = %v, want %v", got, want)
	}
}

func TestSteps(t *testing.T) {
	ctx := context.Background()
	s := openTemp(t, Options{})
	at := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	steps := []deploy.Step{
		{Target: "web", JobID: "j1", Phase: "created", NewID: "new1", OldID: "old1", At: at},
		{Target: "db", JobID: "j2", Phase: "stopped_old", OldID: "old2", At: at},
		{Target: "web", JobID: "j1", Phase: "renamed", NewID: "new1", OldID: "old1", At: at.Add(time.Second)},
	}
	for _, st := range steps {
		if err := s.PutStep(ctx, st); err != nil {
			t.Fatalf("PutStep: %v", err)
		}
	}
	got, err := s.Steps(ctx)
	if err != nil {
		t.Fatalf("Steps: %v", err)
	}
	if want := []deploy.Step{steps[1], steps[2]}; !reflect.DeepEqual(got, want) {
		t.Errorf("Steps() = %+v, want %+v (one entry per target, the latest)", got, want)
	}
	if err := s.DeleteStep(ctx, "web"); err != nil {
		t.Fatalf("DeleteStep: %v", err)
	}
	if err := s.DeleteStep(ctx, "never"); err != nil {
		t.Errorf("DeleteStep(never) = %v, want nil", err)
	}
	got, err = s.Steps(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := []deploy.Step{steps[1]}; !reflect.DeepEqual(got, want) {
		t.Errorf("Steps() after delete = %+v, want %+v", got, want)
	}
}

func TestDeliveryDedupeTTL(t *testing.T) {
	ctx := context.Background()
	clk := newClock()
	s := openTemp(t, Options{DeliveryTTL: 7 * 24 * time.Hour, Now: clk.Now})
	seen := func(id string) bool {
		t.Helper()
		ok, err := s.Seen(ctx, id)
		if err != nil {
			t.Fatalf("Seen(%s): %v", id, err)
		}
		return ok
	}
	if seen("d1") {
		t.Fatalf("Seen(d1) before Record = true, want false")
	}
	if err := s.Record(ctx, "d1", clk.Now()); err != nil {
		t.Fatalf("Record: %v", err)
	}
	if !seen("d1") {
		t.Errorf("Seen(d1) after Record = false, want true")
	}
	clk.Add(7*24*time.Hour - time.Second)
	if !seen("d1") {
		t.Errorf("Seen(d1) just before the TTL = false, want true")
	}
	if err := s.Record(ctx, "d2", clk.Now()); err != nil {
		t.Fatal(err)
	}
	clk.Add(2 * time.Second)
	if seen("d1") {
		t.Errorf("Seen(d1) after the TTL = true, want false")
	}
	if !seen("d2") {
		t.Errorf("Seen(d2) = false, want true")
	}

	n, err := s.Prune(ctx)
	if err != nil {
		t.Fatalf("Prune: %v", err)
	}
	if n != 1 {
		t.Errorf("Prune() = %d, want 1", n)
	}
	// Re-recording an id moves it forward in time.
	clk.Add(6 * 24 * time.Hour)
	if err := s.Record(ctx, "d2", clk.Now()); err != nil {
		t.Fatal(err)
	}
	clk.Add(2 * 24 * time.Hour)
	if !seen("d2") {
		t.Errorf("Seen(d2) two days after re-recording = false, want true")
	}
	if n, err := s.Prune(ctx); err != nil || n != 0 {
		t.Errorf("Prune() = %d, %v; want 0, nil", n, err)
	}
}

func TestRecordPrunesExpired(t *testing.T) {
	ctx := context.Background()
	clk := newClock()
	s := openTemp(t, Options{DeliveryTTL: time.Hour, Now: clk.Now})
	for i := range 100 {
		if err := s.Record(ctx, fmt.Sprintf("old-%d", i), clk.Now()); err != nil {
			t.Fatal(err)
		}
	}
	clk.Add(2 * time.Hour)
	// Each Record deletes up to recordPruneBatch expired entries.
	for i := range 2 {
		if err := s.Record(ctx, fmt.Sprintf("new-%d", i), clk.Now()); err != nil {
			t.Fatal(err)
		}
	}
	var n int
	if err := s.db.View(func(tx *bolt.Tx) error {
		n = tx.Bucket(bucketDeliveries).Stats().KeyN
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if n != 2 {
		t.Errorf("deliveries stored = %d, want 2 (expired ones pruned by Record)", n)
	}
}

func TestDigests(t *testing.T) {
	ctx := context.Background()
	s := openTemp(t, Options{})
	got, err := s.Digest(ctx, "ghcr.io/o/app:latest")
	if err != nil || got != "" {
		t.Errorf("Digest(unknown) = %q, %v; want \"\", nil", got, err)
	}
	d1, d2 := "sha256:"+strings.Repeat("1", 64), "sha256:"+strings.Repeat("2", 64)
	for _, d := range []string{d1, d2} {
		if err := s.PutDigest(ctx, "ghcr.io/o/app:latest", d); err != nil {
			t.Fatal(err)
		}
		if got, err := s.Digest(ctx, "ghcr.io/o/app:latest"); err != nil || got != d {
			t.Errorf("Digest after PutDigest(%s) = %q, %v", d, got, err)
		}
	}
}

func TestIdleDoesNotWrite(t *testing.T) {
	ctx := context.Background()
	clk := newClock()
	path := filepath.Join(t.TempDir(), "hookd.db")
	s, err := Open(path, Options{Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Record(ctx, "d", clk.Now()); err != nil {
		t.Fatal(err)
	}
	if err := s.PutDigest(ctx, "k", "sha256:x"); err != nil {
		t.Fatal(err)
	}
	if err := s.PutJob(ctx, job("j", "web", clk.Now(), deploy.StatusSucceeded)); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	before, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}

	s, err = Open(path, Options{Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	id := txID(t, s)
	// What an idle hookd does: polls find the same digest, nothing expires,
	// reconcile finds no journal, the API reads.
	if _, err := s.Prune(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.PutDigest(ctx, "k", "sha256:x"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteStep(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Seen(ctx, "d"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Jobs(ctx, deploy.JobFilter{}); err != nil {
		t.Fatal(err)
	}
	if got := txID(t, s); got != id {
		t.Errorf("write transactions while idle: txid %d → %d, want none", id, got)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	after, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(before, after) {
		t.Errorf("state file changed while idle (open, reads, no-op writes, close)")
	}
}

func TestReopenKeepsState(t *testing.T) {
	ctx := context.Background()
	clk := newClock()
	path := filepath.Join(t.TempDir(), "hookd.db")
	s, err := Open(path, Options{Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	pending := job("p1", "web", clk.Now(), deploy.StatusQueued)
	step := deploy.Step{Target: "web", JobID: "p1", Phase: "created", NewID: "n", OldID: "o", At: clk.Now()}
	for _, err := range []error{
		s.PutJob(ctx, pending),
		s.PutStep(ctx, step),
		s.Record(ctx, "delivery-1", clk.Now()),
		s.PutDigest(ctx, "ghcr.io/o/app:latest", "sha256:abc"),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	s, err = Open(path, Options{Now: clk.Now})
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer s.Close()
	jobs, err := s.Jobs(ctx, deploy.JobFilter{})
	if err != nil || len(jobs) != 1 || !reflect.DeepEqual(jobs[0], pending) {
		t.Errorf("Jobs() after reopen = %+v, %v; want [%+v]", jobs, err, pending)
	}
	steps, err := s.Steps(ctx)
	if err != nil || !reflect.DeepEqual(steps, []deploy.Step{step}) {
		t.Errorf("Steps() after reopen = %+v, %v; want [%+v]", steps, err, step)
	}
	if seen, err := s.Seen(ctx, "delivery-1"); err != nil || !seen {
		t.Errorf("Seen(delivery-1) after reopen = %v, %v; want true", seen, err)
	}
	if d, err := s.Digest(ctx, "ghcr.io/o/app:latest"); err != nil || d != "sha256:abc" {
		t.Errorf("Digest after reopen = %q, %v; want sha256:abc", d, err)
	}
}

func TestOpenLockedFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "hookd.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	start := time.Now()
	s2, err := Open(path, Options{Timeout: 50 * time.Millisecond})
	if err == nil {
		s2.Close()
		t.Fatalf("second Open of %s succeeded, want a lock error", path)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("second Open took %v, want about the 50ms timeout", d)
	}
	want := "state file " + path + " is locked by another process (is another hookd running?)"
	if !strings.Contains(err.Error(), want) {
		t.Errorf("Open error = %q, want it to contain %q", err, want)
	}
	if !errors.Is(err, bolt.ErrTimeout) {
		t.Errorf("Open error = %v, want it to wrap bolt.ErrTimeout", err)
	}
}

func TestOpenRefusesBadFiles(t *testing.T) {
	garbage := make([]byte, 64<<10)
	if _, err := rand.Read(garbage); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		write func(t *testing.T, path string)
		want  string
	}{
		{"random bytes", func(t *testing.T, path string) { writeFile(t, path, garbage) },
			"is not a valid hookd database"},
		{"short text file", func(t *testing.T, path string) { writeFile(t, path, []byte("hello\n")) },
			"is not a valid hookd database"},
		{"damaged pages", damagePages, "is not a valid hookd database"},
		{"damaged data pages, intact meta and freelist", damageDataPages, "is not a valid hookd database"},
		{"another program's bbolt file", foreignDB, "is not a hookd database"},
		{"newer schema", newerSchema, "was written by a newer hookd (schema 99"},
		// bbolt would initialise an empty file silently: hookd would
		// forget its queued jobs and rolled-back digests without a word.
		{"empty file", func(t *testing.T, path string) { writeFile(t, path, nil) }, "is empty (0 bytes)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "hookd.db")
			tt.write(t, path)
			before, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			s, err := Open(path, Options{})
			if err == nil {
				s.Close()
				t.Fatalf("Open(%s) succeeded, want an error", tt.name)
			}
			msg := err.Error()
			for _, want := range []string{path, tt.want, "move it aside"} {
				if !strings.Contains(msg, want) {
					t.Errorf("Open error = %q, want it to contain %q", msg, want)
				}
			}
			after, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(before, after) {
				t.Errorf("Open changed the refused file")
			}
			// The lock must be released so the operator can retry at once.
			if f, err := os.OpenFile(path, os.O_RDWR, 0); err != nil {
				t.Errorf("reopen refused file: %v", err)
			} else {
				f.Close()
			}
		})
	}
}

func writeFile(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// damagePages writes a real store with some history, then garbles every
// page after the two meta pages (freelist included), as a bad sector or a
// half-copied file would.
func damagePages(t *testing.T, path string) {
	t.Helper()
	damagePagesWhere(t, path, func(uint16) bool { return true })
}

// damageDataPages garbles every branch and leaf page but leaves the meta
// pages and the freelist intact, so bbolt opens the file and only reading
// it shows the damage.
func damageDataPages(t *testing.T, path string) {
	t.Helper()
	damagePagesWhere(t, path, func(flags uint16) bool { return flags&(0x01|0x02) != 0 })
}

func damagePagesWhere(t *testing.T, path string, match func(flags uint16) bool) {
	t.Helper()
	ctx := context.Background()
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 200 {
		if err := s.PutJob(ctx, job(fmt.Sprintf("j%03d", i), "web", time.Now(), deploy.StatusSucceeded)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	page := os.Getpagesize()
	n := 0
	// Page header: id uint64, flags uint16, count uint16, overflow uint32.
	for off := 2 * page; off+page <= len(b); off += page {
		if match(binary.LittleEndian.Uint16(b[off+8:])) {
			for i := off + 16; i < off+page; i++ {
				b[i] = byte(i*7 + 3)
			}
			n++
		}
	}
	if n == 0 {
		t.Fatalf("no page to damage in %s", path)
	}
	writeFile(t, path, b)
}

func foreignDB(t *testing.T, path string) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucket([]byte("users"))
		if err != nil {
			return err
		}
		return b.Put([]byte("alice"), []byte("admin"))
	}); err != nil {
		t.Fatal(err)
	}
}

func newerSchema(t *testing.T, path string) {
	t.Helper()
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketMeta).Put(keySchema, []byte("99"))
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestOpenUnusableDirectory(t *testing.T) {
	tmp := t.TempDir()
	file := filepath.Join(tmp, "not-a-dir")
	writeFile(t, file, []byte("x"))
	path := filepath.Join(file, "hookd", "hookd.db")
	_, err := Open(path, Options{})
	if err == nil {
		t.Fatalf("Open(%s) succeeded, want an error", path)
	}
	if want := "create state directory " + filepath.Dir(path); !strings.Contains(err.Error(), want) {
		t.Errorf("Open error = %q, want it to contain %q", err, want)
	}
}

func TestOpenPermissionDenied(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root ignores file modes; run as an unprivileged user to cover this")
	}
	tests := []struct {
		name  string
		setup func(t *testing.T, dir string) string
		want  []string
	}{
		{"unwritable directory", func(t *testing.T, dir string) string {
			if err := os.Chmod(dir, 0o500); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = os.Chmod(dir, 0o700) })
			return filepath.Join(dir, "hookd.db")
		}, []string{"create state file", "permission denied", "fix the ownership of"}},
		{"file owned by someone else", func(t *testing.T, dir string) string {
			path := filepath.Join(dir, "hookd.db")
			s, err := Open(path, Options{})
			if err != nil {
				t.Fatal(err)
			}
			s.Close()
			if err := os.Chmod(path, 0o400); err != nil {
				t.Fatal(err)
			}
			return path
		}, []string{"permission denied", "fix its ownership"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := tt.setup(t, t.TempDir())
			_, err := Open(path, Options{})
			if err == nil {
				t.Fatalf("Open(%s) succeeded, want an error", path)
			}
			for _, want := range append([]string{path}, tt.want...) {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("Open error = %q, want it to contain %q", err, want)
				}
			}
		})
	}
}

func TestContextCancelled(t *testing.T) {
	s := openTemp(t, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.PutJob(ctx, job("j", "web", time.Now(), deploy.StatusQueued)); !errors.Is(err, context.Canceled) {
		t.Errorf("PutJob(cancelled ctx) = %v, want context.Canceled", err)
	}
	if _, err := s.Seen(ctx, "d"); !errors.Is(err, context.Canceled) {
		t.Errorf("Seen(cancelled ctx) = %v, want context.Canceled", err)
	}
}

func BenchmarkPutJob(b *testing.B) {
	ctx := context.Background()
	s := openTemp(b, Options{JobsPerTarget: 100})
	base := time.Now()
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		// New jobs: the history is full after 100, so most puts also prune.
		j := job(fmt.Sprintf("job-%09d", i), "web", base.Add(time.Duration(i)), deploy.StatusSucceeded)
		if err := s.PutJob(ctx, j); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRecord(b *testing.B) {
	ctx := context.Background()
	s := openTemp(b, Options{})
	now := time.Now()
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if err := s.Record(ctx, fmt.Sprintf("72d3162e-cc78-11e3-81ab-%012d", i), now); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSeen(b *testing.B) {
	ctx := context.Background()
	s := openTemp(b, Options{})
	now := time.Now()
	for i := range 1000 {
		if err := s.Record(ctx, fmt.Sprintf("72d3162e-cc78-11e3-81ab-%012d", i), now); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if _, err := s.Seen(ctx, fmt.Sprintf("72d3162e-cc78-11e3-81ab-%012d", i%2000)); err != nil {
			b.Fatal(err)
		}
	}
}
