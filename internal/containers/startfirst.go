package containers

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/client"

	"github.com/and3rn3t/hookd/internal/deploy"
	"github.com/and3rn3t/hookd/internal/strategy"
)

// StartFirstName is the start-first strategy's name in the hookd.strategy
// label.
const StartFirstName = "start-first"

// Journal phases of a start-first swap, in the order it takes them. Until
// PhaseSFRetire the old container is never touched.
const (
	PhaseSFCreate  = "sf_create"  // create <name>.hookd-new on the target's networks, without its aliases
	PhaseSFStart   = "sf_start"   // start it
	PhaseSFGate    = "sf_gate"    // gate it while the old one serves
	PhaseSFPromote = "sf_promote" // rejoin its networks with the aliases: it takes requests next to the old one
	PhaseSFRetire  = "sf_retire"  // old → <name>.hookd-old, new → <name>, drain, stop and remove the old one
	PhaseSFAbort   = "sf_abort"   // the gate failed: remove the new one
)

// StartFirstDocker is the part of the Engine API the start-first strategy
// calls: the recreate's, and taking a container off a network (a container
// gets its aliases only when it joins one). *client.Client satisfies it.
type StartFirstDocker interface {
	Docker
	NetworkDisconnect(ctx context.Context, networkID, containerID string, force bool) error
}

var _ StartFirstDocker = (*client.Client)(nil)

// StartFirst deploys a container target without downtime, for apps behind
// a reverse proxy on a Docker network: the new version is created next to
// the old one under a temporary name, started and gated while the old one
// serves and it takes no requests (it carries none of the target's network
// aliases); only once it passed does it get them, and only then is the old
// one taken out with its own stop signal, so that it drains, and removed.
// A version that fails its gate is removed; the old one was never touched.
//
// It is opt-in (hookd.strategy=start-first): two instances of an app run at
// once for a moment, which an app that locks its data must never do. It
// refuses a target that publishes host ports or shares another network
// namespace (host, container:), which two versions cannot both hold.
//
// It shares the recreate's preparation (checks, pull, policy, the
// replacement's configuration), health gate and probe. Every step is
// journalled first; Reconcile settles what a crash left.
type StartFirst struct {
	rc     *Recreate
	docker StartFirstDocker
	log    *slog.Logger
}

// NewStartFirst returns the start-first strategy. cfg is the recreate's.
func NewStartFirst(docker StartFirstDocker, cfg Config) *StartFirst {
	rc := NewRecreate(docker, cfg)
	s := &StartFirst{rc: rc, docker: docker, log: rc.log}
	rc.fit = s.fit
	rc.replace = s.swap
	return s
}

// Deploy does the work of one job; see StartFirst.
func (s *StartFirst) Deploy(ctx context.Context, run *strategy.Run) strategy.Outcome {
	return s.rc.Deploy(ctx, run)
}

// fit returns why start-first cannot deploy cur, or nil.
func (s *StartFirst) fit(ctx context.Context, cur containerInspect) error {
	name := strings.TrimPrefix(cur.Name, "/")
	hc := cur.HostConfig
	var why string
	switch mode := hc.NetworkMode; {
	case mode.IsHost():
		why = "it uses the host's network (network_mode: host), so both versions would need the same ports"
	case mode.IsContainer():
		why = fmt.Sprintf("it shares the network namespace of %s (network_mode: container: or service:), "+
			"so both versions would need the same ports", mode.ConnectedContainer())
	case hc.PublishAllPorts || len(publishedPorts(hc)) > 0:
		ports := strings.Join(publishedPorts(hc), ", ")
		if ports == "" {
			ports = "every exposed port (--publish-all)"
		}
		why = "it publishes host ports (" + ports + "), which only one container can bind"
	case cur.Config.MacAddress != "": //nolint:staticcheck // set only when the user gave --mac-address
		why = "it has a fixed MAC address, which two containers cannot share"
	}
	if why == "" && cur.NetworkSettings != nil {
		for _, n := range sortedKeys(cur.NetworkSettings.Networks) {
			ep := cur.NetworkSettings.Networks[n]
			if ep != nil && ep.IPAMConfig != nil && (ep.IPAMConfig.IPv4Address != "" || ep.IPAMConfig.IPv6Address != "") {
				why = fmt.Sprintf("it has a fixed address on the network %s, which two containers cannot hold", n)
				break
			}
		}
	}
	if why != "" {
		return fmt.Errorf("start-first cannot deploy %q: %s; put it behind a reverse proxy on a Docker network "+
			"(no host ports), or deploy it with the default recreate strategy (remove the label %s=%s)",
			name, why, deploy.LabelStrategy, StartFirstName)
	}
	// Containers in its namespaces must be recreated to join the new one,
	// which only the recreate does.
	rel, err := s.rc.related(ctx, cur)
	if err != nil {
		return err
	}
	if len(rel.joiners) > 0 {
		names := make([]string, 0, len(rel.joiners))
		for _, c := range rel.joiners {
			names = append(names, strings.TrimPrefix(c.Name, "/"))
		}
		return fmt.Errorf("start-first cannot deploy %q: %s share its namespace and must be recreated with it; "+
			"deploy it with the default recreate strategy (remove the label %s=%s)",
			name, strings.Join(names, ", "), deploy.LabelStrategy, StartFirstName)
	}
	return nil
}

// publishedPorts lists the host port bindings: "8080/tcp → 127.0.0.1:80".
func publishedPorts(hc *container.HostConfig) []string {
	var out []string
	for p, bs := range hc.PortBindings {
		for _, b := range bs {
			var host string
			switch {
			case b.HostPort == "" && b.HostIP == "":
				host = "a random host port"
			case b.HostPort == "":
				host = "a random port on " + b.HostIP
			default:
				host = net.JoinHostPort(b.HostIP, b.HostPort)
			}
			out = append(out, string(p)+" → "+host)
		}
	}
	sort.Strings(out)
	return out
}

// drain is how long the old container keeps serving next to the new one
// before its stop signal (hookd.drain; none by default).
func (s *StartFirst) drain(labels map[string]string) time.Duration {
	d, ok := deploy.LabelDuration(labels, deploy.LabelDrain, 0)
	if !ok {
		s.log.Warn("invalid drain label ignored", "label", deploy.LabelDrain, "value", labels[deploy.LabelDrain])
	}
	return d
}

// swap runs the new container next to cur, gates it, hands it the
// target's aliases and name, and retires cur. Docker steps run to
// completion even when shutdown begins; until the new container takes
// requests, shutdown removes it and hands the job back to the queue.
func (s *StartFirst) swap(ctx context.Context, run *strategy.Run, cur containerInspect, sp spec, rel relations, log *slog.Logger) strategy.Outcome {
	r := s.rc
	j := run.Job
	name := j.Target
	grace := 10 * time.Second
	if cur.Config.StopTimeout != nil && *cur.Config.StopTimeout > 0 {
		grace = time.Duration(*cur.Config.StopTimeout) * time.Second
	}
	timeout := r.healthTimeout(cur.Config.Labels)
	drain := s.drain(cur.Config.Labels)
	p, _ := parseProbe(cur.Config.Labels) // checked before the pull
	budget := grace + drain + max(timeout, r.cfg.SettleTime) + 2*time.Minute + r.dependentsBudget(rel)
	sctx, scancel := context.WithTimeout(context.WithoutCancel(ctx), budget)
	defer scancel()

	if err := r.settleEarlier(sctx, run.Journal, name); err != nil {
		return strategy.Failed(err)
	}
	st := deploy.Step{Target: name, JobID: j.ID, OldID: cur.ID, Strategy: StartFirstName}
	// discard removes the new container after a failed step.
	discard := func(cause error) strategy.Outcome {
		if r.lost(cause) {
			return r.afterEngineLoss(run, st, verdict{}, cause, log)
		}
		if _, err := r.recoverStartFirst(sctx, name, st); err != nil {
			if r.lost(err) {
				return r.afterEngineLoss(run, st, verdict{}, err, log)
			}
			log.Error("removing the new container failed; left for reconcile", "err", err)
			return strategy.Failed(fmt.Errorf("removing the new container failed too (%v), after: %w", err, cause))
		}
		r.deleteStep(sctx, run.Journal, name, log)
		return run.Interrupted(strategy.Failed(fmt.Errorf("%w; the previous container kept serving", cause)))
	}

	run.Stage(deploy.StageSwapping)
	t0 := time.Now()
	if err := journal(sctx, run.Journal, &st, PhaseSFCreate); err != nil {
		return discard(err)
	}
	quiet := withoutAliases(sp)
	// Pulled by digest, the image is not yet under its tag: create from it
	// with the tag pointed there for the create only (see createTagged).
	newC, err := r.createNew(sctx, run.Journal, &st, PhaseSFCreate, quiet)
	if err != nil {
		return discard(err)
	}
	log.Info("new version created next to the old one", "container", ShortID(newC.ID))

	evCtx, evCancel := context.WithCancel(ctx)
	defer evCancel()
	subscribe := r.containerEvents(evCtx, newC.ID, time.Now().Add(-time.Second))
	msgs, errs := subscribe()

	if run.Stopping() {
		return discard(fmt.Errorf("shutting down before %s: %w", PhaseSFStart, run.Life.Err()))
	}
	if err := journal(sctx, run.Journal, &st, PhaseSFStart); err != nil {
		return discard(err)
	}
	startErr := s.docker.ContainerStart(sctx, newC.ID, container.StartOptions{})
	run.Phase("swap", t0)

	var v verdict
	var unreachable error
	if startErr != nil {
		v = verdict{reason: deploy.ReasonStartFailed, detail: startErr.Error()}
	} else {
		if err := journal(sctx, run.Journal, &st, PhaseSFGate); err != nil {
			return discard(err)
		}
		run.Stage(deploy.StageGating)
		hasHealth := hasHealthcheck(newC.Config)
		log.Info("new version started next to the old one; waiting for its gate",
			"healthcheck", hasHealth, "probe", p != nil, "timeout_seconds", timeout.Seconds())
		t1 := time.Now()
		v, unreachable, err = r.gateAll(ctx, p, newC.ID, msgs, errs, subscribe, hasHealth, timeout, r.cfg.SettleTime)
		run.Phase("health", t1)
		if lost := r.gateLost(err, v); lost != nil {
			return r.afterEngineLoss(run, st, verdict{}, lost, log)
		}
		if err != nil {
			if run.Stopping() {
				return discard(fmt.Errorf("shutting down during the gate: %w", err)) // abandoned: the job is queued again
			}
			v = verdict{reason: deploy.ReasonTimeout, detail: "deploy timeout reached during health gate"}
		}
	}
	evCancel()
	if unreachable != nil {
		return discard(unreachable)
	}

	if v.reason != "" {
		j.RollbackReason, j.RollbackDetail = v.reason, v.detail
		run.Stage(deploy.StageRollback)
		run.Save() // a crash while removing it must not lose the reason
		log.Warn("new version failed its gate; removing it, the old one keeps serving", "reason", v.reason, "detail", v.detail)
		if err := journal(sctx, run.Journal, &st, PhaseSFAbort); err != nil {
			log.Error("journal abort failed", "err", err)
		}
		cause := fmt.Sprintf("new container %s: %s", v.reason, v.detail)
		if _, err := r.recoverStartFirst(sctx, name, st); err != nil {
			if r.lost(err) {
				return r.afterEngineLoss(run, st, v, err, log)
			}
			return strategy.Failed(fmt.Errorf("%s; removing it failed, left for reconcile: %w", cause, err))
		}
		r.deleteStep(sctx, run.Journal, name, log)
		return strategy.Outcome{Status: deploy.StatusRolledBack,
			Err: errors.New(cause + "; removed, the previous container kept serving")}
	}
	j.HealthyAt = time.Now().UTC()

	if run.Stopping() {
		return discard(fmt.Errorf("shutting down before %s: %w", PhaseSFPromote, run.Life.Err()))
	}
	run.Stage(deploy.StageSwapping)
	t2 := time.Now()
	if err := journal(sctx, run.Journal, &st, PhaseSFPromote); err != nil {
		return discard(err)
	}
	if err := s.promote(sctx, newC.ID, name, sp); err != nil {
		return discard(err)
	}
	log.Info("new version passed its gate and carries the aliases; retiring the old one", "drain_seconds", drain.Seconds())
	if err := journal(sctx, run.Journal, &st, PhaseSFRetire); err != nil {
		// The new version serves already: finish all the same.
		log.Error("journal retire failed", "err", err)
	}
	if err := s.retire(sctx, cur.ID, newC.ID, name, drain); err != nil {
		if r.lost(err) {
			return r.afterEngineLoss(run, st, verdict{}, err, log)
		}
		log.Warn("retiring the old container failed; finishing it the reconcile's way", "err", err)
		if _, rerr := r.recoverStartFirst(sctx, name, st); rerr != nil {
			// Keep the journal: a restart must finish this swap, not undo it.
			return strategy.Failed(fmt.Errorf("the new container serves, but retiring the old one failed (%v), left for reconcile: %w", err, rerr))
		}
	}
	run.Phase("retire", t2)
	// The tag names what runs only now.
	if err := r.moveTag(sctx, sp.Tag, sp.ImageID, sp.PrevImageID); err != nil {
		log.Error("moving the local tag to the new image failed", "tag", sp.Tag, "err", err)
	}
	r.deleteStep(sctx, run.Journal, name, log)
	// The dependents that asked to be restarted after the target was
	// redeployed (Compose's restart: true, hookd.depends-on) are restarted
	// once the new version serves alone, each gated, as after a recreate.
	// The swap is finished by then and the old version gone, so one that
	// fails cannot undo it: the job fails and says which, and why.
	if dep := r.afterGate(ctx, sctx, run, cur, newC, rel, log); dep.v.reason != "" {
		j.Failed = r.failedVersion(sctx, dep.failedID, dep.failedName, dep.failedVerdict)
		return strategy.Failed(fmt.Errorf("the new version of %s passed its gate and serves, but %s; start-first had retired the old version, "+
			"so nothing was rolled back: fix the dependent, or deploy the previous image", name, dependentFailure(dep)))
	}
	return strategy.Outcome{Status: deploy.StatusSucceeded}
}

// dependentFailure says which dependent failed after its restart, and how.
func dependentFailure(dep dependentsDone) string {
	return fmt.Sprintf("%s, which depends on it, failed after its restart (%s: %s)",
		dep.failedName, dep.failedVerdict.reason, dep.failedVerdict.detail)
}

// withoutAliases returns sp with no network alias: the new container joins
// its networks as itself only, so that no proxy sends it a request before
// its gate.
func withoutAliases(sp spec) spec {
	out := sp
	if sp.Networking != nil {
		out.Networking = &network.NetworkingConfig{EndpointsConfig: map[string]*network.EndpointSettings{}}
		for n, ep := range sp.Networking.EndpointsConfig {
			out.Networking.EndpointsConfig[n] = quietEndpoint(ep)
		}
	}
	out.Connect = make([]netJoin, len(sp.Connect))
	for i, nj := range sp.Connect {
		out.Connect[i] = netJoin{Network: nj.Network, Endpoint: quietEndpoint(nj.Endpoint)}
	}
	return out
}

func quietEndpoint(ep *network.EndpointSettings) *network.EndpointSettings {
	if ep == nil {
		return nil
	}
	c := *ep
	c.Aliases = nil
	return &c
}

// promote gives the new container the old one's aliases, plus the target's
// name, on each network where the old one had aliases: the engine sets a
// container's aliases only when it joins a network, so it leaves and joins
// again there. It took no request yet; the engine gives back the address
// it had unless another container took it meanwhile, so connections it
// opened while starting usually carry on. From here on the proxy's lookups
// of an alias find both versions. The name as an alias means the name
// never resolves to nothing while the containers trade names.
func (s *StartFirst) promote(ctx context.Context, id, name string, sp spec) error {
	var joins []netJoin
	if sp.Networking != nil {
		for _, n := range sortedKeys(sp.Networking.EndpointsConfig) {
			joins = append(joins, netJoin{Network: n, Endpoint: sp.Networking.EndpointsConfig[n]})
		}
	}
	joins = append(joins, sp.Connect...)
	for _, nj := range joins {
		if nj.Endpoint == nil || len(nj.Endpoint.Aliases) == 0 {
			continue
		}
		ep := *nj.Endpoint
		ep.Aliases = append([]string(nil), ep.Aliases...)
		if !slices.Contains(ep.Aliases, name) {
			ep.Aliases = append(ep.Aliases, name)
		}
		if err := s.docker.NetworkDisconnect(ctx, nj.Network, id, false); err != nil {
			return fmt.Errorf("leave network %s to take the aliases %v: %w", nj.Network, ep.Aliases, err)
		}
		if err := s.docker.NetworkConnect(ctx, nj.Network, id, &ep); err != nil {
			return fmt.Errorf("join network %s with the aliases %v: %w", nj.Network, ep.Aliases, err)
		}
	}
	return nil
}

// retire hands the name to the new container and takes the old one out:
// its own stop signal and stop timeout let it finish the requests in
// flight while it refuses new connections, which a proxy retries on the
// new one (it resolves the aliases and the name to the new one alone once
// the old one stopped). drain keeps it serving that much longer first.
func (s *StartFirst) retire(ctx context.Context, oldID, newID, name string, drain time.Duration) error {
	if err := s.docker.ContainerRename(ctx, oldID, name+deploy.SuffixOld); err != nil {
		return fmt.Errorf("rename old container: %w", err)
	}
	if err := s.docker.ContainerRename(ctx, newID, name); err != nil {
		return fmt.Errorf("rename new container to %s: %w", name, err)
	}
	if drain > 0 {
		t := time.NewTimer(drain)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
	}
	if err := s.docker.ContainerStop(ctx, oldID, container.StopOptions{}); err != nil {
		return fmt.Errorf("stop old container: %w", err)
	}
	if err := s.docker.ContainerRemove(ctx, oldID, container.RemoveOptions{Force: true}); err != nil {
		return fmt.Errorf("remove old container: %w", err)
	}
	return nil
}
