package deployer

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/and3rn3t/hookd/internal/deploy"
)

// dependOn makes target n depend on deps, as the container source reports
// a Compose depends_on or a hookd.depends-on label.
func dependOn(d *Deployer, n string, deps ...string) {
	t := d.targets[n]
	t.DependsOn = deps
	t.Image = "ghcr.io/acme/stack" // one push updates them all
	t.Ref.Path = "acme/stack"
	d.targets[n] = t
}

// TestSubmitDependenciesFirst: one push that updates several services of a
// project queues them in dependency order, not name order.
func TestSubmitDependenciesFirst(t *testing.T) {
	d := queueDeployer(t, Config{}, "app", "db", "web", "cache")
	dependOn(d, "app", "db", "cache")
	dependOn(d, "web", "app")
	dependOn(d, "db")
	dependOn(d, "cache")
	jobs, err := d.Submit(context.Background(), deploy.Request{Repository: "ghcr.io/acme/stack"})
	if err != nil {
		t.Fatalf("Submit: %v", err)
	}
	var got []string
	for _, j := range jobs {
		got = append(got, j.Target)
	}
	if want := []string{"cache", "db", "app", "web"}; !slices.Equal(got, want) || !slices.Equal(d.order, want) {
		t.Errorf("jobs = %v, queue = %v, want %v", got, d.order, want)
	}
}

// TestNextWaitsForRelatedTargets: with several workers, a target does not
// start while one it depends on is deployed or queued before it, nor while
// one that depends on it is deployed (its deploy would restart that one
// mid-swap); unrelated targets go ahead, and a cycle never blocks.
func TestNextWaitsForRelatedTargets(t *testing.T) {
	ctx := context.Background()
	none := func(t *testing.T, d *Deployer, why string) {
		t.Helper()
		short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		defer cancel()
		if j, ok := d.next(short); ok {
			t.Fatalf("next() = job for %s, want none: %s", j.Target, why)
		}
	}
	take := func(t *testing.T, d *Deployer, want string) {
		t.Helper()
		j, ok := d.next(ctx)
		if !ok || j.Target != want {
			t.Fatalf("next() = job for %q (%v), want %s", j.Target, ok, want)
		}
	}

	t.Run("dependency running or queued first", func(t *testing.T) {
		d := queueDeployer(t, Config{}, "app", "db", "other")
		dependOn(d, "app", "db")
		for _, n := range []string{"db", "app", "other"} {
			if _, err := d.Submit(ctx, deploy.Request{Target: n}); err != nil {
				t.Fatal(err)
			}
		}
		take(t, d, "db")
		take(t, d, "other") // app waits for db
		none(t, d, "app waits while db is deployed")
		d.done("db")
		take(t, d, "app")
	})

	t.Run("dependent running", func(t *testing.T) {
		d := queueDeployer(t, Config{}, "app", "db")
		dependOn(d, "app", "db")
		if _, err := d.Submit(ctx, deploy.Request{Target: "app"}); err != nil {
			t.Fatal(err)
		}
		take(t, d, "app")
		if _, err := d.Submit(ctx, deploy.Request{Target: "db"}); err != nil {
			t.Fatal(err)
		}
		none(t, d, "db's deploy would restart app, which is being deployed")
		d.done("app")
		take(t, d, "db")
	})

	t.Run("cycle", func(t *testing.T) {
		d := queueDeployer(t, Config{}, "a", "b")
		dependOn(d, "a", "b")
		dependOn(d, "b", "a")
		if _, err := d.Submit(ctx, deploy.Request{Repository: "ghcr.io/acme/stack"}); err != nil {
			t.Fatal(err)
		}
		take(t, d, "a")
		none(t, d, "b depends on the running a")
		d.done("a")
		take(t, d, "b")
	})
}
