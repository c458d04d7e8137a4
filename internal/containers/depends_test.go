package containers

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/docker/docker/api/types/container"
)

// summary is a container as ContainerList reports it: "name" with labels
// "k=v" and, with a "net=container:X" entry, that network mode.
func summary(name string, kv ...string) container.Summary {
	c := container.Summary{ID: idOf(name), Names: []string{"/" + name}, Labels: map[string]string{}}
	for _, p := range kv {
		k, v, _ := strings.Cut(p, "=")
		if k == "net" {
			c.HostConfig.NetworkMode = v
			continue
		}
		c.Labels[k] = v
	}
	return c
}

// idOf is the made-up id of the container called name.
func idOf(name string) string {
	sum := sha256.Sum256([]byte(name))
	return hex.EncodeToString(sum[:])
}

func composed(project, service, dependsOn string, more ...string) []string {
	return append([]string{composeProject + "=" + project, composeService + "=" + service, composeOneoff + "=False",
		composeDependsOn + "=" + dependsOn}, more...)
}

func TestGraphCheck(t *testing.T) {
	stack := []container.Summary{
		summary("p-db-1", composed("p", "db", "")...),
		summary("p-app-1", composed("p", "app", "db:service_healthy:true,cache:service_started:false")...),
		summary("p-cache-1", composed("p", "cache", "")...),
		summary("p-web-1", composed("p", "web", "app:service_started:false")...),
		// another project's "db" is not p's
		summary("q-app-1", composed("q", "app", "db:service_started:false")...),
	}
	tests := []struct {
		name    string
		list    []container.Summary
		target  string
		wantErr string // "" for none
	}{
		{"compose project", stack, "p-db-1", ""},
		{"dependent's dependency is checked too", stack, "p-cache-1", ""},
		{"missing compose dependency", stack, "q-app-1", "q-app-1 depends on service db of project q, which has no container"},
		{"missing dependency of a dependent", append(slices.Clone(stack[:2]), stack[3]), "p-db-1", "p-app-1 depends on service cache of project p, which has no container"},
		{"hookd.depends-on missing", []container.Summary{summary("web", "hookd.depends-on=api, db"), summary("api")}, "web", "web depends on db (hookd.depends-on), which has no container"},
		{"hookd.depends-on cycle", []container.Summary{summary("a", "hookd.depends-on=b"), summary("b", "hookd.depends-on=c"), summary("c", "hookd.depends-on=a")},
			"b", "form a cycle: b → c → a → b"},
		{"cycle through a dependent", []container.Summary{summary("db"), summary("app", "hookd.depends-on=db,worker"), summary("worker", "hookd.depends-on=app")},
			"db", "form a cycle"},
		{"network namespace of a gone container", []container.Summary{summary("vpn"), summary("torrent", "net=container:"+strings.Repeat("x", 64))}, "torrent", "has no container"},
		{"network namespace by id prefix", []container.Summary{summary("vpn"), summary("torrent", "net=container:vvvvvvvvvvvv")}, "vpn", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := newGraph(tt.list).check(tt.target)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("check(%s) = %v, want nil", tt.target, err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr) || !errors.As(err, new(*dependencyError))):
				t.Errorf("check(%s) = %v, want a *dependencyError containing %q", tt.target, err, tt.wantErr)
			}
		})
	}
}

func TestGraphDependentsAndOrder(t *testing.T) {
	g := newGraph([]container.Summary{
		summary("p-db-1", composed("p", "db", "")...),
		summary("p-web-1", composed("p", "web", "app:service_started:true,db:service_started:true")...),
		summary("p-app-1", composed("p", "app", "db:service_healthy:true")...),
		summary("p-vpn-1", composed("p", "vpn", "")...),
		summary("p-torrent-1", composed("p", "torrent", "vpn:service_started:true", "net=container:"+idOf("p-vpn-1"))...),
		summary("standalone", "hookd.depends-on=p-db-1"),
	})
	if got, want := g.dependents("p-db-1"), []string{"p-app-1", "p-web-1", "standalone"}; !slices.Equal(got, want) {
		t.Errorf("dependents(db) = %v, want %v", got, want)
	}
	if got, want := g.order([]string{"p-web-1", "p-app-1", "standalone"}), []string{"p-app-1", "p-web-1", "standalone"}; !slices.Equal(got, want) {
		t.Errorf("order = %v, want %v (web depends on app)", got, want)
	}
	if got, want := g.dependents("p-vpn-1"), []string{"p-torrent-1"}; !slices.Equal(got, want) {
		t.Errorf("dependents(vpn) = %v, want %v", got, want)
	}
	joins := slices.ContainsFunc(g.deps["p-torrent-1"], func(e edge) bool { return e.join && e.to == "p-vpn-1" })
	if !joins {
		t.Errorf("torrent's dependencies = %+v, want it to join p-vpn-1 (network_mode container:<its id>)", g.deps["p-torrent-1"])
	}
}

func TestComposeDeps(t *testing.T) {
	got := composeDeps("db:service_healthy:true, cache:service_started:false,old:service_started,")
	want := []composeDep{{"db", true}, {"cache", false}, {"old", false}}
	if !slices.Equal(got, want) {
		t.Errorf("composeDeps = %v, want %v", got, want)
	}
	if got := composeDeps(""); len(got) != 0 {
		t.Errorf("composeDeps(\"\") = %v, want none", got)
	}
}

func TestJoinsNamespaceAndRejoin(t *testing.T) {
	oldID, newID := strings.Repeat("a", 64), strings.Repeat("b", 64)
	tests := []struct {
		name  string
		hc    container.HostConfig
		joins bool
		want  container.HostConfig
	}{
		{"network by id", container.HostConfig{NetworkMode: container.NetworkMode("container:" + oldID)}, true,
			container.HostConfig{NetworkMode: container.NetworkMode("container:" + newID)}},
		{"network by name keeps the name", container.HostConfig{NetworkMode: "container:vpn"}, true,
			container.HostConfig{NetworkMode: "container:vpn"}},
		{"ipc, pid and volumes by id prefix", container.HostConfig{IpcMode: "container:aaaaaaaaaaaa", PidMode: container.PidMode("container:" + oldID), VolumesFrom: []string{oldID + ":ro", "other"}}, true,
			container.HostConfig{IpcMode: container.IpcMode("container:" + newID), PidMode: container.PidMode("container:" + newID), VolumesFrom: []string{newID + ":ro", "other"}}},
		{"unrelated", container.HostConfig{NetworkMode: "container:other", VolumesFrom: []string{"other"}}, false,
			container.HostConfig{NetworkMode: "container:other", VolumesFrom: []string{"other"}}},
		{"bridge", container.HostConfig{NetworkMode: "bridge"}, false, container.HostConfig{NetworkMode: "bridge"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hc := tt.hc
			if got := joinsNamespace(&hc, oldID, "vpn"); got != tt.joins {
				t.Errorf("joinsNamespace = %v, want %v", got, tt.joins)
			}
			rejoin(&hc, oldID, newID, "vpn")
			if hc.NetworkMode != tt.want.NetworkMode || hc.IpcMode != tt.want.IpcMode || hc.PidMode != tt.want.PidMode ||
				!slices.Equal(hc.VolumesFrom, tt.want.VolumesFrom) && len(hc.VolumesFrom)+len(tt.want.VolumesFrom) > 0 {
				t.Errorf("rejoin = %+v / %v, want %+v / %v", hc.NetworkMode, hc.VolumesFrom, tt.want.NetworkMode, tt.want.VolumesFrom)
			}
		})
	}
}
