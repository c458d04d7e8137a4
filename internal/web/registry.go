package web

import (
	"context"
	"errors"
	"sort"
	"sync"
	"time"

	"github.com/and3rn3t/hookd/internal/deploy"
	"github.com/and3rn3t/hookd/internal/registry"
)

// Registry is the poller's view of the registries. *registry.Client
// satisfies it, and so does *CredentialWatch.
type Registry interface {
	Head(ctx context.Context, ref string) (registry.Descriptor, error)
	Platform(ctx context.Context, ref string) (manifestDigest, configDigest string, err error)
}

// CredentialWatch passes the poller's look-ups through to a Registry and
// notes, per registry host, whether the last look-up was refused for its
// credentials (registry.ErrUnauthorized): a Pi that only polls would
// otherwise learn of a revoked token from its log alone. It keeps one
// entry per host that refused. Safe for concurrent use.
type CredentialWatch struct {
	next Registry
	now  func() time.Time

	mu      sync.Mutex
	refused map[string]Refusal // by host
}

// Refusal is a registry that refuses hookd's credentials.
type Refusal struct {
	Host  string
	Ref   string    // the reference of the refused look-up
	Since time.Time // the first refusal since the last success
}

var _ Registry = (*CredentialWatch)(nil)

// WatchCredentials returns a CredentialWatch in front of next.
func WatchCredentials(next Registry) *CredentialWatch {
	return &CredentialWatch{next: next, now: time.Now, refused: map[string]Refusal{}}
}

// Head is next's Head, watched.
func (c *CredentialWatch) Head(ctx context.Context, ref string) (registry.Descriptor, error) {
	d, err := c.next.Head(ctx, ref)
	c.note(ref, err)
	return d, err
}

// Platform is next's Platform, watched.
func (c *CredentialWatch) Platform(ctx context.Context, ref string) (string, string, error) {
	m, cfg, err := c.next.Platform(ctx, ref)
	c.note(ref, err)
	return m, cfg, err
}

func (c *CredentialWatch) note(ref string, err error) {
	host := registryHost(ref)
	refused := errors.Is(err, registry.ErrUnauthorized)
	if !refused && err != nil {
		return // says nothing about the credentials
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !refused {
		delete(c.refused, host)
		return
	}
	if _, ok := c.refused[host]; !ok {
		c.refused[host] = Refusal{Host: host, Ref: refName(ref), Since: c.now()}
	}
}

// Refusals returns the registries whose last look-up was refused for its
// credentials, by host.
func (c *CredentialWatch) Refusals() []Refusal {
	if c == nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]Refusal, 0, len(c.refused))
	for _, r := range c.refused {
		out = append(out, r)
	}
	sort.Slice(out, func(a, b int) bool { return out[a].Host < out[b].Host })
	return out
}

// refName is ref without a digest, for people.
func refName(ref string) string {
	if r, err := deploy.ParseRef(ref); err == nil {
		return r.Repository() + ":" + r.Tag
	}
	return ref
}
