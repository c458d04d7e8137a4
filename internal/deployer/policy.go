package deployer

import (
	"fmt"

	"github.com/and3rn3t/hookd/internal/deploy"
)

// The deployer's policy: what it refuses to deploy, whichever door a
// request came through. A digest whose deploy a target rolled back is not
// deployed to it again unless the request is forced (hookd deploy
// --force), so a bad image is not retried in a loop. Likewise a digest a
// gate rejected (deploy.ErrRejected: unsigned, signed by someone else) is
// refused at once, without a pull or another look at the registry, until
// a forced request asks the gates again; force never skips the gates.

// rejection is the digest a gate last rejected for a target, and why.
type rejection struct {
	digest, reason string
}

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
	if r := d.rejected[target]; r.digest == digest {
		return fmt.Errorf("digest %s was refused on %s: %s; once that is fixed, ask again with hookd deploy --force %s (the checks run again)",
			digest, target, r.reason, target)
	}
	return nil
}

// noteRejection remembers that a gate rejected digest for target.
func (d *Deployer) noteRejection(target, digest string, err error) {
	if digest == "" {
		return
	}
	d.mu.Lock()
	d.rejected[target] = rejection{digest: digest, reason: err.Error()}
	d.mu.Unlock()
}

// noteRollback remembers the digest a rolled-back job tried, or a gate
// rejected, and forgets both once a deploy of the target succeeds or finds
// it up to date. Replayed over the stored jobs at start-up, it restores
// what the previous run remembered.
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
	case deploy.StatusRefused:
		if j.Rejected && j.DigestAfter != "" {
			d.rejected[j.Target] = rejection{digest: j.DigestAfter, reason: j.Error}
		}
	case deploy.StatusSucceeded, deploy.StatusUpToDate:
		delete(d.rolledBack, j.Target)
		delete(d.rejected, j.Target)
	}
}
