package containers

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"

	"github.com/and3rn3t/hookd/internal/deploy"
)

// A container depends on another when
//   - Compose says so: its com.docker.compose.depends_on label names a
//     service of its project (with restart: true it asks to be restarted
//     after that service was updated);
//   - it says so to hookd: hookd.depends-on=NAME[,NAME], the same outside
//     Compose, restart included;
//   - it joined the other's network, IPC or PID namespace or took its
//     volumes (network_mode service:vpn, --network container:vpn): it must
//     be recreated to join the replacement, since the old container's
//     namespace goes away with it.

// edge is one dependency of a container.
type edge struct {
	to      string // the container depended on; "" when missing
	what    string // how the dependency was named, for messages
	restart bool   // restart the dependent after `to` was redeployed
	join    bool   // the dependent joined `to`'s namespace
}

// graph is the dependency graph of the containers on the engine.
type graph struct {
	names []string                     // every container's name
	byID  map[string]string            // id → name
	c     map[string]container.Summary // name → container
	deps  map[string][]edge            // name → its dependencies
}

// newGraph builds the graph of every container in list.
func newGraph(list []container.Summary) *graph {
	g := &graph{byID: map[string]string{}, c: map[string]container.Summary{}, deps: map[string][]edge{}}
	services := map[[2]string][]string{} // project, service → container names
	for _, c := range list {
		if len(c.Names) == 0 {
			continue
		}
		name := strings.TrimPrefix(c.Names[0], "/")
		g.names = append(g.names, name)
		g.byID[c.ID] = name
		g.c[name] = c
		if p, s := composeMember(c.Labels); p != "" && s != "" {
			services[[2]string{p, s}] = append(services[[2]string{p, s}], name)
		}
	}
	slices.Sort(g.names)
	for _, name := range g.names {
		c := g.c[name]
		var deps []edge
		if p, _ := composeMember(c.Labels); p != "" {
			for _, d := range composeDeps(c.Labels[composeDependsOn]) {
				what := fmt.Sprintf("service %s of project %s", d.Service, p)
				members := services[[2]string{p, d.Service}]
				if len(members) == 0 {
					deps = append(deps, edge{what: what, restart: d.Restart})
				}
				for _, m := range members {
					deps = append(deps, edge{to: m, what: what, restart: d.Restart})
				}
			}
		}
		for _, n := range splitNames(c.Labels[deploy.LabelDependsOn]) {
			e := edge{what: n + " (" + deploy.LabelDependsOn + ")", restart: true}
			if _, ok := g.c[n]; ok {
				e.to = n
			}
			deps = append(deps, e)
		}
		if ref, ok := strings.CutPrefix(c.HostConfig.NetworkMode, "container:"); ok {
			deps = append(deps, edge{to: g.resolve(ref), what: "container " + ref + " (its network namespace)", join: true})
		}
		g.deps[name] = deps
	}
	return g
}

func splitNames(s string) []string {
	var out []string
	for n := range strings.SplitSeq(s, ",") {
		if n = strings.TrimSpace(n); n != "" {
			out = append(out, n)
		}
	}
	return out
}

// resolve returns the name of the container ref names (a name, an id or
// an id prefix), or "".
func (g *graph) resolve(ref string) string {
	if _, ok := g.c[ref]; ok {
		return ref
	}
	if n, ok := g.byID[ref]; ok {
		return n
	}
	if len(ref) >= 12 {
		for id, n := range g.byID {
			if strings.HasPrefix(id, ref) {
				return n
			}
		}
	}
	return ""
}

// dependents returns the containers with a dependency on name, by name.
func (g *graph) dependents(name string) []string {
	var out []string
	for _, n := range g.names {
		if slices.ContainsFunc(g.deps[n], func(e edge) bool { return e.to == name }) {
			out = append(out, n)
		}
	}
	return out
}

// dependencyError refuses a deploy for its dependencies (a cycle, a
// missing one, a container that would be cut off): nothing was touched.
type dependencyError struct{ msg string }

func (e *dependencyError) Error() string { return e.msg }

func refuseDeps(format string, a ...any) error {
	return &dependencyError{msg: fmt.Sprintf(format, a...)}
}

// check returns why target cannot be deployed for its dependencies: a
// dependency (of the target, or of a dependent it would restart) that has
// no container, or a cycle among them. It returns nil otherwise.
func (g *graph) check(target string) error {
	start := append([]string{target}, g.dependents(target)...)
	const (
		unseen = iota
		active
		done
	)
	state := map[string]int{}
	var path []string
	var visit func(n string) error
	visit = func(n string) error {
		switch state[n] {
		case active:
			i := slices.Index(path, n)
			cycle := append(slices.Clone(path[i:]), n)
			return refuseDeps("the dependencies of %s form a cycle: %s", target, strings.Join(cycle, " → "))
		case done:
			return nil
		}
		state[n] = active
		path = append(path, n)
		for _, e := range g.deps[n] {
			if e.to == "" {
				return refuseDeps("%s depends on %s, which has no container", n, e.what)
			}
			if err := visit(e.to); err != nil {
				return err
			}
		}
		path = path[:len(path)-1]
		state[n] = done
		return nil
	}
	for _, n := range start {
		if err := visit(n); err != nil {
			return err
		}
	}
	return nil
}

// order sorts names so that each follows those it depends on.
func (g *graph) order(names []string) []string {
	ts := make([]deploy.Target, 0, len(names))
	for _, n := range names {
		t := deploy.Target{Name: n}
		for _, e := range g.deps[n] {
			if e.to != "" {
				t.DependsOn = append(t.DependsOn, e.to)
			}
		}
		ts = append(ts, t)
	}
	deploy.SortByDependencies(ts)
	out := make([]string, 0, len(ts))
	for _, t := range ts {
		out = append(out, t.Name)
	}
	return out
}

// relations is what a deploy of one target does to the containers that
// depend on it.
type relations struct {
	// joiners share the target's namespaces or volumes: recreated, after
	// the target passed its gate, to join the replacement; in dependency
	// order.
	joiners []containerInspect
	// restart asked to be restarted after the target was redeployed
	// (Compose's restart: true, hookd.depends-on), and are no joiners; in
	// dependency order.
	restart []containerInspect
	// notes say which dependents are left alone, and why.
	notes []string
	// graph is every container's dependencies, for the Compose hash.
	graph *graph
}

// related finds what a deploy of cur must do to the containers that depend
// on it, and refuses (a *dependencyError) a deploy whose dependencies form a
// cycle or name a container that does not exist, or that would cut off a
// container sharing cur's namespace which hookd may not recreate.
func (r *Recreate) related(ctx context.Context, cur containerInspect) (relations, error) {
	name := strings.TrimPrefix(cur.Name, "/")
	list, err := r.docker.ContainerList(ctx, container.ListOptions{All: true})
	if err != nil {
		return relations{}, fmt.Errorf("list containers: %w", err)
	}
	g := newGraph(list)
	if _, ok := g.c[name]; !ok {
		return relations{}, fmt.Errorf("target %q not found", name)
	}
	if err := g.check(name); err != nil {
		return relations{}, err
	}
	rel := relations{graph: g}
	var joiners, restart []string
	inspected := map[string]containerInspect{}
	for _, n := range g.dependents(name) {
		var restarts, joins bool
		for _, e := range g.deps[n] {
			if e.to == name {
				restarts, joins = restarts || e.restart, joins || e.join
			}
		}
		c, err := r.docker.ContainerInspect(ctx, g.c[n].ID)
		if err != nil || c.ContainerJSONBase == nil || c.Config == nil || c.State == nil || c.HostConfig == nil {
			continue // gone meanwhile
		}
		joins = joins || joinsNamespace(c.HostConfig, cur.ID, name)
		if !joins && !restarts {
			continue
		}
		allowed := deploy.Eligible(n, c.Config.Labels) && r.cfg.Scope.Contains(c.Config.Labels)
		switch {
		case joins && !allowed:
			return relations{}, refuseDeps("container %q shares the namespace of %q: recreating %q would cut it off, and hookd "+
				"only recreates containers labelled %s=true; label it (or redeploy both, e.g. docker compose up -d)",
				n, name, name, deploy.LabelEnable)
		case joins && !c.State.Running:
			rel.notes = append(rel.notes, fmt.Sprintf("%s shares %s's namespace but is not running: not recreated (docker compose up -d recreates it)", n, name))
		case joins:
			joiners = append(joiners, n)
			inspected[n] = c
		case !c.State.Running:
			// A stopped dependent stays stopped.
		case !allowed:
			rel.notes = append(rel.notes, fmt.Sprintf("%s asks to be restarted after %s but is not labelled %s=true: not restarted", n, name, deploy.LabelEnable))
		default:
			restart = append(restart, n)
			inspected[n] = c
		}
	}
	for _, n := range g.order(joiners) {
		rel.joiners = append(rel.joiners, inspected[n])
	}
	for _, n := range g.order(restart) {
		rel.restart = append(rel.restart, inspected[n])
	}
	return rel, nil
}

// joinsNamespace reports whether hc shares a namespace or the volumes of
// the container with id or name.
func joinsNamespace(hc *container.HostConfig, id, name string) bool {
	refers := func(ref string) bool {
		return ref == name || ref == id || len(ref) >= 12 && strings.HasPrefix(id, ref)
	}
	for _, mode := range []string{string(hc.NetworkMode), string(hc.IpcMode), string(hc.PidMode)} {
		if ref, ok := strings.CutPrefix(mode, "container:"); ok && refers(ref) {
			return true
		}
	}
	for _, v := range hc.VolumesFrom {
		if ref, _, _ := strings.Cut(v, ":"); refers(ref) {
			return true
		}
	}
	return false
}

// rejoin points every reference of hc to the container oldID/name at
// newID instead: a reference by name keeps the name (it names the
// replacement now), one by id takes the new id.
func rejoin(hc *container.HostConfig, oldID, newID, name string) {
	swap := func(ref string) string {
		if ref == name {
			return ref
		}
		if ref == oldID || len(ref) >= 12 && strings.HasPrefix(oldID, ref) {
			return newID
		}
		return ref
	}
	if ref, ok := strings.CutPrefix(string(hc.NetworkMode), "container:"); ok {
		hc.NetworkMode = container.NetworkMode("container:" + swap(ref))
	}
	if ref, ok := strings.CutPrefix(string(hc.IpcMode), "container:"); ok {
		hc.IpcMode = container.IpcMode("container:" + swap(ref))
	}
	if ref, ok := strings.CutPrefix(string(hc.PidMode), "container:"); ok {
		hc.PidMode = container.PidMode("container:" + swap(ref))
	}
	vf := slices.Clone(hc.VolumesFrom)
	for i, v := range vf {
		ref, mode, hasMode := strings.Cut(v, ":")
		vf[i] = swap(ref)
		if hasMode {
			vf[i] += ":" + mode
		}
	}
	hc.VolumesFrom = vf
}

// dependsOn returns the names of the containers c depends on (see
// graph), sorted: the deployer deploys those first when one push updates
// several. It lists the containers of c's Compose project when c names
// services of it.
func (s *Source) dependsOn(ctx context.Context, c containerInspect) ([]string, error) {
	var out []string
	if p, _ := composeMember(c.Config.Labels); p != "" && c.Config.Labels[composeDependsOn] != "" {
		list, err := s.docker.ContainerList(ctx, container.ListOptions{All: true, Filters: filters.NewArgs(filters.Arg("label", composeProject+"="+p))})
		if err != nil {
			return nil, fmt.Errorf("list containers of project %s: %w", p, err)
		}
		for _, d := range composeDeps(c.Config.Labels[composeDependsOn]) {
			for _, m := range list {
				if mp, ms := composeMember(m.Labels); mp == p && ms == d.Service && len(m.Names) > 0 {
					out = append(out, strings.TrimPrefix(m.Names[0], "/"))
				}
			}
		}
	}
	out = append(out, splitNames(c.Config.Labels[deploy.LabelDependsOn])...)
	if c.HostConfig != nil {
		if ref, ok := strings.CutPrefix(string(c.HostConfig.NetworkMode), "container:"); ok {
			if o, err := s.docker.ContainerInspect(ctx, ref); err == nil && o.ContainerJSONBase != nil {
				out = append(out, strings.TrimPrefix(o.Name, "/"))
			}
		}
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}
