package store

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/and3rn3t/hookd/internal/deploy"
)

// rot flips one byte of the state file on disk, in the first occurrence of
// marker, as bit rot on an SD card would: bbolt keeps no checksum of values,
// so the file still opens and passes its page check.
func rot(t *testing.T, path, marker string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	i := bytes.Index(b, []byte(marker))
	if i < 0 {
		t.Fatalf("%q not found in %s", marker, path)
	}
	b[i] ^= 0x40 // '{' becomes ';': the JSON no longer parses
	writeFile(t, path, b)
}

// TestUndecodableRecordsAreQuarantined: one job record and one journal
// entry rot on disk. hookd must keep working with the rest (a queued job of
// another target is still there to resume), move the damaged records aside,
// say so once each, loudly, and count them.
func TestUndecodableRecordsAreQuarantined(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "hookd.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	good := job("good-queued", "web", at, deploy.StatusQueued)
	old := job("good-done", "api", at.Add(-time.Hour), deploy.StatusSucceeded)
	bad := job("rotten", "api", at.Add(time.Minute), deploy.StatusQueued)
	step := deploy.Step{Target: "web", JobID: "good-queued", Phase: "create", OldID: "o", At: at}
	for _, err := range []error{
		s.PutJob(ctx, good), s.PutJob(ctx, old), s.PutJob(ctx, bad),
		s.PutStep(ctx, step),
		s.PutStep(ctx, deploy.Step{Target: "api", JobID: "rotten", Phase: "stop_old", OldID: "o2", At: at}),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	rot(t, path, `{"id":"rotten"`)
	rot(t, path, `{"target":"api"`)

	var logs bytes.Buffer
	s, err = Open(path, Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatalf("Open with one rotten record: %v, want it to open (the page check cannot see a value's bits)", err)
	}
	defer s.Close()

	jobs, err := s.Jobs(ctx, deploy.JobFilter{})
	if err != nil {
		t.Fatalf("Jobs with one rotten record: %v, want the others", err)
	}
	if got, want := jobIDs(jobs), []string{"good-queued", "good-done"}; !reflect.DeepEqual(got, want) {
		t.Errorf("Jobs() = %v, want %v", got, want)
	}
	steps, err := s.Steps(ctx)
	if err != nil || !reflect.DeepEqual(steps, []deploy.Step{step}) {
		t.Errorf("Steps() = %+v, %v; want only the intact %+v", steps, err, step)
	}
	if n := s.Quarantined(); n != 2 {
		t.Errorf("Quarantined() = %d, want 2", n)
	}
	out := logs.String()
	for _, want := range []string{"level=ERROR", "undecodable state record quarantined", "job_id=rotten", "target=api", path} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
	if c := strings.Count(out, "undecodable state record quarantined"); c != 2 {
		t.Errorf("%d quarantine lines, want one per record:\n%s", c, out)
	}

	// Gone from every index, so the target's listing and the look-up agree.
	if got, err := s.Jobs(ctx, deploy.JobFilter{Target: "api"}); err != nil || !reflect.DeepEqual(jobIDs(got), []string{"good-done"}) {
		t.Errorf("Jobs(api) = %v, %v; want [good-done]", jobIDs(got), err)
	}
	if _, err := s.Job(ctx, "rotten"); !errors.Is(err, deploy.ErrJobNotFound) {
		t.Errorf("Job(rotten) = %v, want ErrJobNotFound", err)
	}
	// The damaged bytes are kept, as they were, for a bug report.
	if err := s.db.View(func(tx *bolt.Tx) error {
		q := tx.Bucket(bucketQuarantine)
		if q == nil {
			return errors.New("no quarantine bucket")
		}
		n := 0
		_ = q.ForEach(func(k, v []byte) error {
			n++
			if !bytes.Contains(v, []byte("rotten")) && !bytes.Contains(v, []byte(`"target":"api"`)) {
				t.Errorf("quarantined %q = %q, want the damaged record", k, v)
			}
			return nil
		})
		if n != 2 {
			t.Errorf("quarantine holds %d records, want 2", n)
		}
		return nil
	}); err != nil {
		t.Error(err)
	}
	// New jobs of the target are stored and counted as before.
	if err := s.PutJob(ctx, job("next", "api", at.Add(2*time.Minute), deploy.StatusQueued)); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Jobs(ctx, deploy.JobFilter{Target: "api"}); !reflect.DeepEqual(jobIDs(got), []string{"next", "good-done"}) {
		t.Errorf("Jobs(api) after a new job = %v, want [next good-done]", jobIDs(got))
	}

	// Reported once: the next start finds nothing to quarantine.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	logs.Reset()
	s, err = Open(path, Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Jobs(ctx, deploy.JobFilter{}); err != nil || s.Quarantined() != 0 || logs.Len() != 0 {
		t.Errorf("after reopen: Jobs err %v, Quarantined %d, log %q; want nothing more to quarantine", err, s.Quarantined(), logs.String())
	}
}

// TestDecodedButWrongRecordIsQuarantined: a flipped bit in a field name
// still decodes, into a job without a target or with another id; such a
// record is damaged too.
func TestDecodedButWrongRecordIsQuarantined(t *testing.T) {
	ctx := context.Background()
	s := openTemp(t, Options{})
	at := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	for _, j := range []deploy.Job{job("a", "web", at, deploy.StatusQueued), job("b", "web", at.Add(time.Second), deploy.StatusQueued)} {
		if err := s.PutJob(ctx, j); err != nil {
			t.Fatal(err)
		}
	}
	// "target" → "tarcet", as one flipped bit does.
	if err := s.db.Update(func(tx *bolt.Tx) error {
		jobs := tx.Bucket(bucketJobs)
		k, v := jobs.Cursor().Last()
		return jobs.Put(bytes.Clone(k), bytes.Replace(bytes.Clone(v), []byte(`"target"`), []byte(`"tarcet"`), 1))
	}); err != nil {
		t.Fatal(err)
	}
	jobs, err := s.Jobs(ctx, deploy.JobFilter{})
	if err != nil || !reflect.DeepEqual(jobIDs(jobs), []string{"a"}) {
		t.Errorf("Jobs() = %v, %v; want [a]", jobIDs(jobs), err)
	}
	if s.Quarantined() != 1 {
		t.Errorf("Quarantined() = %d, want 1", s.Quarantined())
	}
}
