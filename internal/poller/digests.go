package poller

import (
	"context"
	"errors"
	"fmt"

	"github.com/and3rn3t/hookd/internal/deploy"
	"github.com/and3rn3t/hookd/internal/registry"
)

// What the poller remembers about digests, so that a check of a tag that
// did not change for this host stays one HEAD: per target, the index digest
// judged unchanged for it (kept in the DigestStore across restarts), and per
// digest, what it resolves to on this host's platform (in memory).

// platformCacheSize bounds the remembered ref@digest → config digest
// resolutions (they never change, so any entry stays valid).
const platformCacheSize = 128

// platform is what a digest resolved to for this host. Both outcomes are
// permanent: a digest's content never changes.
type platform struct {
	config string
	err    error // wraps registry.ErrNoPlatform
}

// platform resolves ref@digest to the config digest of this host's image.
// Answers that cannot change (the digest's content is fixed) are remembered:
// the config digest, or that the index has no manifest for this platform;
// cached reports whether the answer came from memory.
func (p *Poller) platform(ctx context.Context, ref string) (config string, cached bool, err error) {
	p.mu.Lock()
	pl, ok := p.platforms[ref]
	p.mu.Unlock()
	if ok {
		return pl.config, true, pl.err
	}
	_, config, err = p.reg.Platform(ctx, ref)
	if err != nil {
		err = fmt.Errorf("resolve platform of %s: %w", ref, err)
		if !errors.Is(err, registry.ErrNoPlatform) {
			return "", false, err
		}
	}
	p.mu.Lock()
	if len(p.platforms) >= platformCacheSize {
		clear(p.platforms)
	}
	p.platforms[ref] = platform{config: config, err: err}
	p.mu.Unlock()
	return config, false, err
}

// memKey names what is remembered for t following its ref.
func memKey(t deploy.Target) string { return t.Name + "|" + refName(t) }

// storeKey is "poll/<target>|<repo>:<tag>/good".
func storeKey(t deploy.Target) string { return "poll/" + memKey(t) + "/good" }

// recall reads what the store remembers for the targets in list that do not
// follow their ref yet, by memKey. It runs outside the lock: it is I/O.
func (p *Poller) recall(ctx context.Context, list []deploy.Target) map[string]string {
	if p.digests == nil {
		return nil
	}
	p.mu.Lock()
	var fresh []deploy.Target
	for _, t := range list {
		if r := p.refs[refName(t)]; r == nil || !r.follows(t.Name) {
			fresh = append(fresh, t)
		}
	}
	p.mu.Unlock()
	good := make(map[string]string, len(fresh))
	for _, t := range fresh {
		d, err := p.digests.Digest(ctx, storeKey(t))
		if err != nil {
			p.log.Warn("read remembered digest failed", "key", memKey(t), "err", err)
		}
		good[memKey(t)] = d
	}
	return good
}

// rememberGood records digest as unchanged for t on r and keeps it across
// restarts.
func (p *Poller) rememberGood(ctx context.Context, r *ref, t deploy.Target, digest string) {
	p.mu.Lock()
	r.good[t.Name] = digest
	p.mu.Unlock()
	if p.digests == nil {
		return
	}
	if err := p.digests.PutDigest(ctx, storeKey(t), digest); err != nil {
		p.log.Warn("remember digest failed", "key", memKey(t), "err", err)
	}
}
