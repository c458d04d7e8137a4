package deployer

import (
	"fmt"

	"github.com/and3rn3t/hookd/internal/deploy"
)

// The deployer's policy: what it refuses to deploy, whichever door a
// request came through. Today one rule: a digest whose deploy a target
// rolled back is not deployed to it again unless the request is forced
// (hookd deploy --force), so a bad image is not retried in a loop.

// refusalLocked returns why digest must not be deployed to target, or nil.
// d.mu must be held.
func (d *Deployer) refusalLocked(target, digest string, force bool) error {
	if force || digest == "" {
		return nil
	}
	if bad := d.rolledBack[target]; bad == digest {
		return fmt.Errorf("digest %s was rolled back on %s; deploy it again with force (hookd deploy --force %s) once it is fixed",
			digest, target, target)
	}
	return nil
}

// noteRollback remembers the digest a rolled-back job tried, and forgets it
// once a deploy of the target succeeds or finds it up to date.
func (d *Deployer) noteRollback(j deploy.Job) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.noteRollbackLocked(j)
}

// noteRollbackLocked is noteRollback with d.mu held.
func (d *Deployer) noteRollbackLocked(j deploy.Job) {
	switch j.Status {
	case deploy.StatusRolledBack:
		if j.DigestAfter != "" {
			d.rolledBack[j.Target] = j.DigestAfter
		}
	case deploy.StatusSucceeded, deploy.StatusUpToDate:
		delete(d.rolledBack, j.Target)
	}
}
