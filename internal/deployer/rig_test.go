package deployer

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/docker/docker/client"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/and3rn3t/hookd/internal/containers"
	"github.com/and3rn3t/hookd/internal/deploy"
	"github.com/and3rn3t/hookd/internal/metrics"
	"github.com/and3rn3t/hookd/internal/registry"
	"github.com/and3rn3t/hookd/internal/swarmsvc"
)

// rig is what a test sets: the deployer's own settings and those of the
// strategies wired into it, as cmd/hookd wires them.
type rig struct {
	State         State
	Metrics       *metrics.Metrics
	Logger        *slog.Logger
	QueueSize     int
	HealthTimeout time.Duration
	SettleTime    time.Duration
	Keychain      authn.Keychain
	PruneImages   bool
	SelfID        string
	LabelFilter   string
	// Gates every deploy passes (a signature check), as cmd/hookd wires them.
	Gates []Gate
}

// deployer wires a Deployer with the container and service sources and
// strategies against cli.
func (r rig) deployer(t testing.TB, cli *client.Client) *Deployer {
	t.Helper()
	if r.State == nil {
		r.State = newMemState(0)
	}
	if r.Metrics == nil {
		r.Metrics = metrics.New(prometheus.NewRegistry(), metrics.BuildInfo{})
	}
	if r.Logger == nil {
		r.Logger = slog.New(slog.DiscardHandler)
	}
	ccfg := containers.Config{
		HealthTimeout: r.HealthTimeout,
		SettleTime:    r.SettleTime,
		Keychain:      r.Keychain,
		PruneImages:   r.PruneImages,
		SelfID:        r.SelfID,
		Scope:         deploy.Scope(r.LabelFilter),
		Logger:        r.Logger,
	}
	scfg := swarmsvc.Config{SettleTime: r.SettleTime, Keychain: r.Keychain, Scope: deploy.Scope(r.LabelFilter), Logger: r.Logger}
	reg := registry.New(registry.Config{Keychain: r.Keychain, Metrics: r.Metrics, Logger: r.Logger})
	d, err := New(Config{
		State: r.State,
		Ping: func(ctx context.Context) error {
			_, err := cli.Ping(ctx)
			return err
		},
		Sources: []Source{containers.NewSource(cli, ccfg), swarmsvc.NewSource(cli, scfg)},
		Strategies: map[string]Strategy{
			containers.Name:           containers.NewRecreate(cli, ccfg),
			containers.StartFirstName: containers.NewStartFirst(cli, ccfg),
			swarmsvc.Name:             swarmsvc.New(cli, reg, scfg),
		},
		Gates:     r.Gates,
		QueueSize: r.QueueSize,
		Metrics:   r.Metrics,
		Logger:    r.Logger,
	})
	if err != nil {
		t.Fatalf("deployer.New: %v", err)
	}
	return d
}
