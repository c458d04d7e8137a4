package dockertest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Compose is a Compose project written for one test and driven with the
// real Compose CLI (`docker compose`), as a user would. scripts/test.sh
// installs the CLI plugin when it is missing.
type Compose struct {
	// Name is the project name, unique to the test.
	Name string
	// Dir holds compose.yml (and whatever else the test writes there).
	Dir string
	t   testing.TB
}

// NewCompose writes yml as compose.yml in a directory of its own and
// returns the project, named uniquely. yml may use {{LABEL}} for the test's
// hookd.test value: services and networks should carry it, so that the
// rig's sweep finds them if `down` does not. A cleanup runs `docker
// compose down --volumes`. Without the Compose CLI the test is skipped, or
// fails when HOOKD_INTEGRATION=1.
func NewCompose(t testing.TB, yml string) *Compose {
	t.Helper()
	if out, err := exec.Command("docker", "compose", "version").CombinedOutput(); err != nil {
		noCompose(t, fmt.Errorf("docker compose version: %v: %s", err, strings.TrimSpace(string(out))))
	}
	c := &Compose{Name: "hk" + randomHex(4), Dir: t.TempDir(), t: t}
	yml = strings.ReplaceAll(yml, "{{LABEL}}", LabelValue(t))
	if err := os.WriteFile(filepath.Join(c.Dir, "compose.yml"), []byte(yml), 0o644); err != nil {
		t.Fatalf("write compose.yml: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
		defer cancel()
		if out, err := c.Run(ctx, "down", "--volumes", "--remove-orphans", "--timeout", "2"); err != nil {
			t.Logf("dockertest cleanup: compose down: %v\n%s", err, out)
		}
	})
	return c
}

func noCompose(t testing.TB, err error) {
	t.Helper()
	if os.Getenv("HOOKD_INTEGRATION") == "1" {
		t.Fatalf("HOOKD_INTEGRATION=1 but the Compose CLI does not answer (scripts/docker-compose.sh installs it): %v", err)
	}
	t.Skipf("no Compose CLI (scripts/docker-compose.sh installs it): %v", err)
}

// Run runs `docker compose ARGS…` for the project and returns what it
// printed (stdout and stderr, as a terminal would show them).
func (c *Compose) Run(ctx context.Context, args ...string) (string, error) {
	full := append([]string{"compose", "--ansi", "never", "--project-name", c.Name,
		"--project-directory", c.Dir, "--file", filepath.Join(c.Dir, "compose.yml")}, args...)
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "docker", full...)
	cmd.Dir = c.Dir
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// Must runs `docker compose ARGS…` and fails the test when it fails.
func (c *Compose) Must(ctx context.Context, args ...string) string {
	c.t.Helper()
	out, err := c.Run(ctx, args...)
	if err != nil {
		c.t.Fatalf("docker compose %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// Container returns the name Compose gives the first container of service.
func (c *Compose) Container(service string) string {
	return c.Name + "-" + service + "-1"
}
