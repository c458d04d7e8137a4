package deployer

import (
	"context"
	"fmt"
	"github.com/and3rn3t/hookd/internal/deploy"
	"strings"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/filters"
)

// labelFilters select the containers that opted in (and are in scope).
func (d *Deployer) labelFilters(more ...filters.KeyValuePair) filters.Args {
	args := filters.NewArgs(filters.Arg("label", deploy.LabelEnable+"=true"))
	if d.cfg.labelKey != "" {
		args.Add("label", d.cfg.LabelFilter)
	}
	for _, kv := range more {
		args.Add(kv.Key, kv.Value)
	}
	return args
}

// inScope applies Config.LabelFilter.
func (d *Deployer) inScope(labels map[string]string) bool {
	if d.cfg.labelKey == "" {
		return true
	}
	v, ok := labels[d.cfg.labelKey]
	if !ok {
		return false
	}
	return !d.cfg.labelHasValue || v == d.cfg.labelValue
}

// relist rebuilds the target set from a full container list and, on a
// swarm manager, the service list.
func (d *Deployer) relist(ctx context.Context) error {
	list, err := d.docker.ContainerList(ctx, container.ListOptions{
		Filters: d.labelFilters(filters.Arg("status", "running")),
	})
	if err != nil {
		return fmt.Errorf("list containers: %w", err)
	}
	fresh := make(map[string]deploy.Target, len(list))
	for _, c := range list {
		t, ok, err := d.inspectTarget(ctx, c.ID)
		if err != nil {
			if cerrdefs.IsNotFound(err) {
				continue // gone since the list
			}
			return err
		}
		if ok {
			fresh[t.Name] = t
		}
	}
	services, err := d.listServices(ctx)
	if err != nil {
		return err
	}
	for _, t := range services {
		if _, taken := fresh[t.Name]; taken {
			d.log.Warn("service ignored: a container target has the same name", "target", t.Name)
			continue
		}
		fresh[t.Name] = t
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for name, old := range d.targets {
		if _, ok := fresh[name]; ok {
			continue
		}
		if _, busy := d.running[name]; busy {
			fresh[name] = old // mid-swap: the name is briefly on no running container
			continue
		}
		d.dropTargetLocked(old)
	}
	for _, t := range fresh {
		d.putTargetLocked(t)
	}
	d.targets = fresh
	d.discovered = true
	return nil
}

// refresh updates the target set for one container after an event.
func (d *Deployer) refresh(ctx context.Context, idOrName string) {
	t, ok, err := d.inspectTarget(ctx, idOrName)
	if err != nil && !cerrdefs.IsNotFound(err) {
		if ctx.Err() == nil {
			d.log.Warn("refresh target failed", "container", idOrName, "err", err)
		}
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for name, old := range d.targets {
		if old.Kind == deploy.KindService || old.ID != idOrName && old.ID != t.ID && name != idOrName {
			continue
		}
		if ok && name == t.Name {
			continue
		}
		if _, busy := d.running[name]; busy {
			continue
		}
		d.dropTargetLocked(old)
		delete(d.targets, name)
	}
	if ok {
		if old, taken := d.targets[t.Name]; taken && old.Kind == deploy.KindService {
			// As in relist: the container keeps the name.
			d.log.Warn("service ignored: a container target has the same name", "target", t.Name)
		}
		d.putTargetLocked(t)
		d.targets[t.Name] = t
	}
}

func (d *Deployer) putTargetLocked(t deploy.Target) {
	if old, ok := d.targets[t.Name]; ok && (old.Image != t.Image || old.Tag != t.Tag) {
		d.metrics.TargetInfo.DeleteLabelValues(old.Name, old.Image, old.Tag)
	}
	d.metrics.TargetInfo.WithLabelValues(t.Name, t.Image, t.Tag).Set(1)
}

func (d *Deployer) dropTargetLocked(t deploy.Target) {
	d.metrics.TargetInfo.DeleteLabelValues(t.Name, t.Image, t.Tag)
	d.log.Info("target gone", "target", t.Name)
}

// inspectTarget reports whether a container is a target: running, opted in,
// not a swarm task, not one of hookd's own temporary names, and following a
// tag (a container pinned to a digest has nothing to follow).
func (d *Deployer) inspectTarget(ctx context.Context, idOrName string) (deploy.Target, bool, error) {
	c, err := d.docker.ContainerInspect(ctx, idOrName)
	if err != nil {
		return deploy.Target{}, false, fmt.Errorf("inspect container %s: %w", idOrName, err)
	}
	t := deploy.Target{ID: c.ID, Kind: deploy.KindContainer}
	if c.ContainerJSONBase == nil || c.Config == nil || c.State == nil {
		return t, false, nil
	}
	t.Name = strings.TrimPrefix(c.Name, "/")
	if !c.State.Running || !eligible(t.Name, c.Config.Labels) || !d.inScope(c.Config.Labels) {
		return t, false, nil
	}
	ref, err := deploy.ParseRef(c.Config.Image)
	if err != nil || ref.Digest != "" || strings.HasPrefix(c.Config.Image, "sha256:") {
		return t, false, nil
	}
	t.Ref, t.Image, t.Tag, t.ImageID = ref, ref.Repository(), ref.Tag, c.Image
	t.HealthTimeout = d.healthTimeout(c.Config.Labels)
	if img, err := d.docker.ImageInspect(ctx, c.Image); err == nil {
		t.Digest = repoDigest(img.RepoDigests, ref, "")
	}
	return t, true, nil
}

// eligible applies the label and name rules shared by discovery and the
// worker: hookd only ever touches a container that opted in.
func eligible(name string, labels map[string]string) bool {
	if labels[deploy.LabelEnable] != "true" {
		return false
	}
	for k := range labels {
		if strings.HasPrefix(k, "com.docker.swarm.") {
			return false
		}
	}
	for _, s := range []string{suffixNew, suffixOld, suffixFailed} {
		if strings.HasSuffix(name, s) {
			return false
		}
	}
	return true
}

func (d *Deployer) healthTimeout(labels map[string]string) time.Duration {
	if v, ok := labels[deploy.LabelHealthTimeout]; ok {
		if t, err := time.ParseDuration(v); err == nil && t > 0 {
			return t
		}
		d.log.Warn("invalid health timeout label ignored", "label", deploy.LabelHealthTimeout, "value", v)
	}
	return d.cfg.HealthTimeout
}

// repoDigest picks the digest of ref's repository from an image's
// RepoDigests ("repo@sha256:…"), preferring want when it is among them.
func repoDigest(repoDigests []string, ref deploy.ImageRef, want string) string {
	var found string
	for _, rd := range repoDigests {
		repo, dg, ok := strings.Cut(rd, "@")
		if !ok {
			continue
		}
		r, err := deploy.ParseRef(repo)
		if err != nil || r.Repository() != ref.Repository() {
			continue
		}
		if want != "" && dg == want {
			return dg
		}
		if found == "" {
			found = dg
		}
	}
	return found
}

// hasDigest reports whether digest is among ref's repository digests.
func hasDigest(repoDigests []string, ref deploy.ImageRef, digest string) bool {
	return digest != "" && repoDigest(repoDigests, ref, digest) == digest
}

// follow keeps the target set current from the event streams until ctx is
// done, re-subscribing with backoff and relisting after every gap.
func (d *Deployer) follow(ctx context.Context) {
	bo := backoff{min: 500 * time.Millisecond, max: 30 * time.Second}
	for ctx.Err() == nil {
		evCtx, cancel := context.WithCancel(ctx)
		var s streams
		s.containers, s.containerErrs = d.docker.Events(evCtx, events.ListOptions{Filters: d.labelFilters(
			filters.Arg("type", string(events.ContainerEventType)),
			filters.Arg("event", string(events.ActionStart)),
			filters.Arg("event", string(events.ActionDie)),
			filters.Arg("event", string(events.ActionDestroy)),
			filters.Arg("event", string(events.ActionRename)),
		)})
		// Service events carry no labels, so they cannot be filtered by
		// label; they are few (create, update, remove), and each is checked
		// with an inspect. An engine outside a swarm sends none.
		s.services, s.serviceErrs = d.docker.Events(evCtx, events.ListOptions{Filters: filters.NewArgs(
			filters.Arg("type", string(events.ServiceEventType)),
		)})
		// Relist after subscribing so nothing falls between list and stream.
		err := d.relist(ctx)
		if err == nil {
			err = d.stream(ctx, s, &bo)
		}
		cancel()
		if ctx.Err() != nil {
			return
		}
		delay := bo.next()
		d.log.Warn("docker event stream lost, retrying", "err", err, "retry_in_seconds", delay.Seconds())
		if !sleepCtx(ctx, delay) {
			return
		}
	}
}

// streams are the two event subscriptions follow keeps.
type streams struct {
	containers, services       <-chan events.Message
	containerErrs, serviceErrs <-chan error
}

func (d *Deployer) stream(ctx context.Context, s streams, bo *backoff) error {
	for {
		select {
		case m := <-s.containers:
			bo.reset()
			d.refresh(ctx, m.Actor.ID)
		case m := <-s.services:
			bo.reset()
			d.refreshService(ctx, m.Actor.ID)
		case err := <-s.containerErrs:
			if err == nil {
				return fmt.Errorf("event stream closed")
			}
			return fmt.Errorf("event stream: %w", err)
		case err := <-s.serviceErrs:
			if err == nil {
				return fmt.Errorf("service event stream closed")
			}
			return fmt.Errorf("service event stream: %w", err)
		case <-ctx.Done():
			return nil
		}
	}
}
