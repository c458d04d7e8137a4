package containers

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/url"
	"syscall"
	"time"

	"github.com/docker/docker/client"

	"github.com/and3rn3t/hookd/internal/backoff"
	"github.com/and3rn3t/hookd/internal/deploy"
	"github.com/and3rn3t/hookd/internal/strategy"
)

// The Docker engine may go away in the middle of a swap: an upgrade
// restarts it, or it crashes. Without live-restore, a stopping daemon stops
// every container, and one hookd had stopped itself (the old container)
// counts as stopped by hand, so no restart policy brings it back. A target
// that ran before a deploy must run after it, whatever the engine did: so
// a swap the engine interrupted is not given up as failed half way. hookd
// waits for the engine to answer again, then settles the swap exactly as
// start-up reconciliation would (recover: exactly one container under the
// name, started), and says on the job what happened.
//
// One judgement changes: a gate the replacement failed as the engine went
// away (it "exited": the engine stopped it) says nothing about the image,
// so that verdict is void. The swap is undone (the replacement removed,
// not kept as .hookd-failed) and the job fails without marking the digest
// as rolled back; only a gate the replacement failed on its own, with the
// engine up (unhealthy, timeout), still ends rolled back.

// errEngineLost marks a failure because the engine stopped answering.
var errEngineLost = errors.New("the Docker engine stopped answering")

// reasonEngineLost is the gate's verdict when the engine stopped answering
// as it was confirming it; it is never recorded on a job.
const reasonEngineLost = "engine_lost"

// engineRetry paces the wait for an engine that went away.
var engineRetry = backoff.Policy{Base: 500 * time.Millisecond, Max: 5 * time.Second}

// engineLost reports whether err means the engine did not answer (down,
// restarting, shutting down) rather than refusing the request. A socket
// that refuses hookd's user is a set-up mistake, not a restart.
func engineLost(err error) bool {
	switch {
	case err == nil:
		return false
	case errors.Is(err, errEngineLost):
		return true
	case errors.Is(err, fs.ErrPermission):
		return false
	}
	return client.IsErrConnectionFailed(err) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// lost reports whether err, a failed step, came from the engine going
// away. A stopping daemon first refuses new connections, then stops its
// containers, and meanwhile still answers on the connections it has, with
// errors of its own ("failed to update store for object type
// *libnetwork.endpoint"): so any error is checked against a ping on a new
// connection.
func (r *Recreate) lost(err error) bool {
	return err != nil && (engineLost(err) || r.engineGoingAway(context.Background()))
}

// gateLost returns why the health gate could not decide because the
// engine went away, or nil. A verdict against the replacement reached as
// the engine went away says nothing about the image: the stopping engine
// stopped it (it "exited", its probe or healthcheck failed).
func (r *Recreate) gateLost(err error, v verdict) error {
	switch {
	case engineLost(err):
		return err
	case v.reason == reasonEngineLost:
		return fmt.Errorf("%w: %s", errEngineLost, v.detail)
	case err == nil && v.reason != "" && r.engineGoingAway(context.Background()):
		return fmt.Errorf("%w: the new container was %s (%s) as the engine went away", errEngineLost, v.reason, v.detail)
	}
	return nil
}

// engineGoingAway reports whether the engine refuses new connections. A
// stopping daemon closes its listener first and still answers, for a
// while, on the connections it has, which the client's pool reuses: so
// the socket is dialled afresh. An engine reached another way (ssh) is
// pinged.
func (r *Recreate) engineGoingAway(ctx context.Context) bool {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if h, ok := r.docker.(interface{ DaemonHost() string }); ok {
		if network, addr, ok := dialAddr(h.DaemonHost()); ok {
			var d net.Dialer
			c, err := d.DialContext(ctx, network, addr)
			if err != nil {
				return !errors.Is(err, context.Canceled)
			}
			_ = c.Close()
		}
	}
	_, err := r.docker.Ping(ctx)
	return err != nil && !errors.Is(err, context.Canceled)
}

// dialAddr is the network and address of a unix:// or tcp:// engine host.
func dialAddr(host string) (network, addr string, ok bool) {
	u, err := url.Parse(host)
	if err != nil {
		return "", "", false
	}
	switch u.Scheme {
	case "unix":
		return "unix", u.Path, u.Path != ""
	case "tcp", "http", "https":
		return "tcp", u.Host, u.Host != ""
	}
	return "", "", false
}

// waitEngine returns once the engine answers a ping on a new connection,
// or life's error when hookd shuts down first.
func (r *Recreate) waitEngine(life context.Context) error {
	for n := 1; ; n++ {
		if !r.engineGoingAway(life) {
			return life.Err()
		}
		t := time.NewTimer(engineRetry.Delay(n, 0))
		select {
		case <-t.C:
		case <-life.Done():
			t.Stop()
			return life.Err()
		}
	}
}

// settleAttempts bounds how often settling is tried once the engine is
// back (it may still be restarting containers, or go away again).
const settleAttempts = 5

// afterEngineLoss settles the swap journalled in st after the engine
// stopped answering (cause). v is the gate's verdict when the gate had
// decided. It waits for the engine as long as hookd runs; a shutdown
// meanwhile hands the job back (Abandoned) and leaves the journal entry to
// start-up reconciliation.
func (r *Recreate) afterEngineLoss(run *strategy.Run, st deploy.Step, v verdict, cause error, log *slog.Logger) strategy.Outcome {
	j := run.Job
	name := j.Target
	where := phaseWords(st.Phase)
	undoing := st.Phase == PhaseRollback || st.Phase == PhaseSFAbort
	trusted := undoing && (v.reason == deploy.ReasonUnhealthy || v.reason == deploy.ReasonTimeout)
	ctx := context.WithoutCancel(run.Life)
	if st.Phase == PhaseRollback && !trusted {
		// The verdict came from the engine stopping the replacement.
		j.RollbackReason, j.RollbackDetail = "", ""
		where = phaseWords(PhaseHealth)
		if err := journal(ctx, run.Journal, &st, PhaseHealth); err != nil {
			log.Error("journal after engine loss failed", "err", err)
		}
	}
	lost := time.Now()
	j.Notes = append(j.Notes, fmt.Sprintf("%s: the Docker engine stopped answering during %s; hookd waited for it to settle the swap",
		lost.UTC().Format(time.RFC3339), where))
	run.Save()
	log.Warn("docker engine stopped answering during a swap; waiting for it to settle the swap", "phase", st.Phase, "err", cause)

	var dir direction
	var err error
	for attempt, logged := 1, false; attempt <= settleAttempts; {
		if werr := r.waitEngine(run.Life); werr != nil {
			log.Warn("shutting down while the engine is away; start-up reconciliation settles the swap")
			return strategy.Outcome{Abandoned: true, Err: cause}
		}
		if !logged {
			log.Info("docker engine answers again; settling the swap", "away_seconds", time.Since(lost).Seconds())
			logged = true
		}
		rctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		dir, err = r.settleStep(rctx, name, st)
		cancel()
		if err == nil {
			break
		}
		if r.lost(err) {
			continue // away again: wait for it, this attempt does not count
		}
		log.Warn("settling the swap after the engine came back failed; retrying", "attempt", attempt, "err", err)
		if !sleepLife(run.Life, engineRetry.Delay(attempt, 0)) {
			return strategy.Outcome{Abandoned: true, Err: cause}
		}
		attempt++
	}
	away := time.Since(lost).Round(time.Second)
	if err != nil {
		return strategy.Failed(fmt.Errorf("the Docker engine stopped answering during %s, and the swap could not be settled once it was back (%w); "+
			"the journal keeps it, and hookd settles it before the next deploy of %s or at its next start", where, err, name))
	}
	r.deleteStep(ctx, run.Journal, name, log)
	switch {
	case dir == dirForward:
		if j.HealthyAt.IsZero() {
			j.HealthyAt = time.Now().UTC()
		}
		j.Notes = append(j.Notes, fmt.Sprintf("the engine was back after %s; hookd finished the swap: the new container runs", away))
		return strategy.Outcome{Status: deploy.StatusSucceeded}
	case trusted:
		j.Notes = append(j.Notes, fmt.Sprintf("the engine was back after %s; hookd finished the rollback: the previous container runs", away))
		return strategy.Outcome{Status: deploy.StatusRolledBack,
			Err: fmt.Errorf("new container %s: %s; rolled back to the previous container", v.reason, v.detail)}
	case dir == dirNone:
		j.Notes = append(j.Notes, fmt.Sprintf("the engine was back after %s; the previous container had not been touched and runs", away))
	case st.Strategy == StartFirstName:
		j.Notes = append(j.Notes, fmt.Sprintf("the engine was back after %s; hookd removed the new version and made sure the previous container runs", away))
	default:
		j.Notes = append(j.Notes, fmt.Sprintf("the engine was back after %s; hookd restored the previous container, which runs", away))
	}
	return strategy.Failed(fmt.Errorf("the Docker engine restarted during %s; once it answered again, hookd made sure the previous container runs under %q "+
		"and did not judge the new image: deploy again", where, name))
}

// phaseWords names where a swap was, for people.
func phaseWords(phase string) string {
	switch phase {
	case PhaseHealth:
		return "the health gate"
	case PhaseRollback:
		return "the rollback"
	case PhaseCleanup:
		return "the clean-up after a passed health gate"
	case PhaseSFGate:
		return "the new version's gate"
	case PhaseSFAbort:
		return "the removal of a new version that failed its gate"
	case PhaseSFPromote:
		return "the hand-over of the aliases"
	case PhaseSFRetire:
		return "the retirement of the old container"
	}
	return "the swap (" + phase + ")"
}

// sleepLife waits d, or returns false when life ends first.
func sleepLife(life context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-life.Done():
		return false
	}
}
