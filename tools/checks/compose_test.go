package checks

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
)

// loadCompose loads docker-compose.yml the way `docker compose` does after
// the README's `cp .env.example .env`: from a directory holding both.
func loadCompose(t *testing.T) *types.Project {
	t.Helper()
	dir := t.TempDir()
	for src, dst := range map[string]string{
		"docker-compose.yml": "docker-compose.yml",
		".env.example":       ".env",
		"Dockerfile":         "Dockerfile",
	} {
		if err := os.WriteFile(filepath.Join(dir, dst), readRepoFile(t, src), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	opts, err := cli.NewProjectOptions(
		[]string{filepath.Join(dir, "docker-compose.yml")},
		cli.WithWorkingDirectory(dir),
		cli.WithEnvFiles(),
		cli.WithDotEnv,
		cli.WithName("hookd"),
	)
	if err != nil {
		t.Fatalf("compose options: %v", err)
	}
	p, err := opts.LoadProject(context.Background())
	if err != nil {
		t.Fatalf("load docker-compose.yml with .env.example as .env: %v", err)
	}
	return p
}

func TestComposeHookdService(t *testing.T) {
	p := loadCompose(t)
	svc, err := p.GetService("hookd")
	if err != nil {
		t.Fatalf("service hookd: %v", err)
	}
	if got, want := svc.Image, "ghcr.io/and3rn3t/hookd:latest"; got != want {
		t.Errorf("hookd image = %q, want %q", got, want)
	}
	if svc.Build == nil || svc.Build.Context == "" {
		t.Errorf("hookd has no build context, want build: . for local builds")
	}
	if got, want := svc.Restart, types.RestartPolicyUnlessStopped; got != want {
		t.Errorf("hookd restart = %q, want %q", got, want)
	}

	var socket, state bool
	for _, v := range svc.Volumes {
		switch {
		case v.Type == types.VolumeTypeBind && v.Source == "/var/run/docker.sock" && v.Target == "/var/run/docker.sock":
			socket = true
		case v.Type == types.VolumeTypeVolume && v.Target == "/var/lib/hookd":
			if _, ok := p.Volumes[v.Source]; !ok {
				t.Errorf("state volume %q is not declared under volumes:", v.Source)
			}
			state = true
		}
	}
	if !socket {
		t.Errorf("hookd volumes %+v do not mount /var/run/docker.sock", svc.Volumes)
	}
	if !state {
		t.Errorf("hookd volumes %+v have no named volume on /var/lib/hookd", svc.Volumes)
	}

	// The image runs as 65532; the socket's group comes from DOCKER_GID.
	if !slices.Contains(svc.GroupAdd, "999") {
		t.Errorf("hookd group_add = %v, want DOCKER_GID from .env (999)", svc.GroupAdd)
	}

	if svc.HealthCheck == nil || svc.HealthCheck.Disable {
		t.Fatalf("hookd has no healthcheck")
	}
	if got, want := []string(svc.HealthCheck.Test), []string{"CMD", "/hookd", "healthcheck"}; !slices.Equal(got, want) {
		t.Errorf("hookd healthcheck test = %q, want %q", got, want)
	}

	// Settings come from .env: the secret reaches the container.
	if v := svc.Environment["HOOKD_WEBHOOK_SECRET"]; v == nil || *v == "" {
		t.Errorf("HOOKD_WEBHOOK_SECRET from .env is not in hookd's environment %v", svc.Environment)
	}
	if got := svc.Labels["hookd.enable"]; got == "true" {
		t.Errorf("hookd is labelled hookd.enable=%q: it would try to deploy itself", got)
	}
}

func TestComposeExampleApp(t *testing.T) {
	p := loadCompose(t)
	var apps []types.ServiceConfig
	for _, svc := range p.Services {
		if svc.Labels["hookd.enable"] == "true" {
			apps = append(apps, svc)
		}
	}
	if len(apps) != 1 {
		t.Fatalf("%d services labelled hookd.enable=true, want the example app", len(apps))
	}
	app := apps[0]
	// ghcr.io/OWNER/APP:latest, lower case like every image reference.
	parts := strings.Split(app.Image, "/")
	if len(parts) != 3 || parts[0] != "ghcr.io" || !strings.HasSuffix(app.Image, ":latest") || app.Image != strings.ToLower(app.Image) {
		t.Errorf("app image = %q, want ghcr.io/OWNER/APP:latest in lower case", app.Image)
	}
	if got, want := parts[1], "your-github-user"; len(parts) == 3 && got != want {
		t.Errorf("app image owner = %q, want GITHUB_OWNER from .env.example %q", got, want)
	}
	var published bool
	for _, port := range app.Ports {
		if port.Target == 25565 && port.Published == "25565" {
			published = true
		}
	}
	if !published {
		t.Errorf("app ports %+v do not publish 25565", app.Ports)
	}
	var data bool
	for _, v := range app.Volumes {
		if v.Type == types.VolumeTypeVolume && v.Source != "" {
			data = true
		}
	}
	if !data {
		t.Errorf("app volumes %+v have no named volume for its data", app.Volumes)
	}
	if app.Restart == "" || app.Restart == types.RestartPolicyNo {
		t.Errorf("app restart = %q, want a restart policy", app.Restart)
	}
}
