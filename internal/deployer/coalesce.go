package deployer

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/and3rn3t/hookd/internal/deploy"
)

// A restart can find two live jobs of one target: the one a shutdown
// interrupted and one queued behind it. In the running queue they would
// have been one job (the newest request, keeping any force), so resume
// deploys the newest and coalesces the older ones into it. An older job is
// not failed (nothing failed) nor refused (no policy said no), nor given a
// status of its own (other tools know the seven): it waits, queued, with a
// note naming the job that carries its request, and ends with that job's
// status and digests once it ends. Its request was served by that deploy,
// so that is its honest outcome.

// coalesceLocked makes j, a live job older than the pending job of its
// target (id), wait for that job, and returns it to be saved. d.mu must be
// held.
func (d *Deployer) coalesceLocked(j deploy.Job, into string) deploy.Job {
	note := "coalesced into job " + into + " after a restart: that job deploys this request too, and this one ends as it ends"
	if j.Status == deploy.StatusRunning {
		j.Notes = append(j.Notes, fmt.Sprintf("interrupted by a shutdown in stage %q", j.Stage))
	}
	if !slices.Contains(j.Notes, note) {
		j.Notes = append(j.Notes, note)
	}
	// It waits again; its earlier start is not this deploy's.
	j.Status, j.Stage, j.StartedAt, j.Phases = deploy.StatusQueued, "", time.Time{}, nil
	d.coalesced[j.Target] = append(d.coalesced[j.Target], j)
	return j
}

// finishCoalesced ends the jobs coalesced into j, which just ended, as j
// ended, and publishes their final status.
func (d *Deployer) finishCoalesced(ctx context.Context, j deploy.Job) {
	d.mu.Lock()
	older := d.coalesced[j.Target]
	delete(d.coalesced, j.Target)
	d.mu.Unlock()
	for _, o := range older {
		o.Status, o.Stage = j.Status, ""
		o.DigestBefore, o.DigestAfter = j.DigestBefore, j.DigestAfter
		o.Revision, o.Source = j.Revision, j.Source
		o.Error = ""
		if j.Error != "" {
			o.Error = "job " + j.ID + ": " + j.Error
		}
		o.FinishedAt = j.FinishedAt
		o.Notes = append(o.Notes, "deployed by job "+j.ID+", which ended "+string(j.Status))
		d.transition(ctx, o, string(o.Status))
	}
}
