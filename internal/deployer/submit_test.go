package deployer

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/and3rn3t/hookd/internal/deploy"
	"github.com/and3rn3t/hookd/internal/store"
)

// gatedStore is the real bbolt store whose first PutJobs waits until
// released, like a slow SD card, and which counts its writes.
type gatedStore struct {
	*store.Store
	entered chan struct{}
	release chan struct{}
	once    sync.Once

	mu      sync.Mutex
	batches []int // jobs per PutJobs call
}

func (g *gatedStore) PutJobs(ctx context.Context, jobs []deploy.Job) error {
	g.once.Do(func() {
		close(g.entered)
		<-g.release
	})
	g.mu.Lock()
	g.batches = append(g.batches, len(jobs))
	g.mu.Unlock()
	return g.Store.PutJobs(ctx, jobs)
}

// TestSubmitGroupCommits: Submits that arrive while another's write is on
// the disk are written together in one transaction afterwards, coalesce as
// if they had come one by one, and record their delivery ids with their
// jobs; one that no target follows waits for nobody and writes nothing.
func TestSubmitGroupCommits(t *testing.T) {
	ctx := context.Background()
	st, err := store.Open(filepath.Join(t.TempDir(), "hookd.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	g := &gatedStore{Store: st, entered: make(chan struct{}), release: make(chan struct{})}
	d := queueDeployer(t, Config{State: g}, "web", "api")

	type result struct {
		id   string
		jobs []deploy.Job
		err  error
	}
	submit := func(id, repo string) result {
		jobs, err := d.Submit(ctx, deploy.Request{Repository: repo, Trigger: deploy.TriggerWebhook, ID: id})
		return result{id, jobs, err}
	}
	first := make(chan result, 1)
	go func() { first <- submit("first", "ghcr.io/acme/web") }()
	<-g.entered

	const n = 20
	results := make(chan result, n)
	for i := range n {
		repo := []string{"ghcr.io/acme/web", "ghcr.io/acme/api"}[i%2]
		go func() { results <- submit(fmt.Sprintf("later-%d", i), repo) }()
	}
	waitFor(t, func() bool { // the later submits wait for the write
		d.batchMu.Lock()
		defer d.batchMu.Unlock()
		return len(d.batch) == n
	})
	done := make(chan result, 1)
	go func() { done <- submit("nobody", "ghcr.io/acme/unfollowed") }()
	select {
	case r := <-done:
		if r.err != nil || len(r.jobs) != 0 {
			t.Errorf("unfollowed image: %v, %v; want no job, no error", r.jobs, r.err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a request no target follows waited for another's write")
	}
	close(g.release)

	r := <-first
	if r.err != nil || len(r.jobs) != 1 {
		t.Fatalf("first submit = %v, %v", r.jobs, r.err)
	}
	webJob := r.jobs[0].ID
	apiJobs := map[string]bool{}
	for range n {
		r := <-results
		if r.err != nil || len(r.jobs) != 1 {
			t.Fatalf("submit %s = %v, %v", r.id, r.jobs, r.err)
		}
		switch j := r.jobs[0]; j.Target {
		case "web":
			if j.ID != webJob {
				t.Errorf("submit %s for web got job %s, want it coalesced into %s", r.id, j.ID, webJob)
			}
		case "api":
			apiJobs[j.ID] = true
		}
		if seen, err := st.Seen(ctx, r.id); err != nil || !seen {
			t.Errorf("Seen(%s) = %v, %v after its 202; want true", r.id, seen, err)
		}
	}
	if len(apiJobs) != 1 {
		t.Errorf("api got jobs %v, want one, coalesced", apiJobs)
	}
	g.mu.Lock()
	batches := g.batches
	g.mu.Unlock()
	if len(batches) != 2 || batches[0] != 1 || batches[1] != n {
		t.Errorf("writes = %v jobs each, want [1 %d]: the later submits in one transaction", batches, n)
	}
	jobs, err := st.Jobs(ctx, deploy.JobFilter{})
	if err != nil || len(jobs) != 2 {
		t.Fatalf("jobs on disk = %v, %v; want web's and api's", jobs, err)
	}
	for _, j := range jobs {
		if j.Status != deploy.StatusQueued || j.Request.ID == "first" && j.Target == "web" {
			t.Errorf("job on disk %s %s from %s, want queued, with the newest request", j.Target, j.Status, j.Request.ID)
		}
	}
}
