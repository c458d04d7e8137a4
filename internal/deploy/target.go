package deploy

import (
	"strings"
	"time"
)

// Labels hookd reads on containers and services. hookd never touches a
// container or service that is not labelled LabelEnable=true.
const (
	LabelEnable        = "hookd.enable"
	LabelHealthTimeout = "hookd.health-timeout"
	LabelStrategy      = "hookd.strategy"
)

// Labels the reporters read on a target: the address it serves at, and
// where and whether its deploys show on GitHub.
const (
	LabelURL               = "hookd.url"
	LabelGitHubEnvironment = "hookd.github-environment"
	LabelGitHubDeployments = "hookd.github-deployments"
)

// Kinds of target.
const (
	KindContainer = "container"
	KindService   = "service"
)

// Target is a container or a Swarm service hookd deploys.
type Target struct {
	Name string `json:"name"`
	ID   string `json:"id"`
	Kind string `json:"kind"` // KindContainer or KindService
	// Strategy names how the target is deployed: "recreate" for a
	// container (the default) or "start-first" (opted in with the
	// hookd.strategy label), "service-update" for a service.
	Strategy string `json:"strategy,omitempty"`
	// Image is the normalised repository the target follows, Tag its tag.
	Image string   `json:"image"`
	Tag   string   `json:"tag"`
	Ref   ImageRef `json:"-"`
	// ImageID is the id of the image the container runs; Digest its
	// repository digest when known. A service has no ImageID (its nodes
	// may run different platforms); Digest is the digest its spec pins.
	ImageID string `json:"image_id"`
	Digest  string `json:"digest,omitempty"`
	// HealthTimeout is the container's health gate; 0 for a service, whose
	// tasks Swarm gates.
	HealthTimeout time.Duration `json:"health_timeout"`
	// RolledBack is the digest whose deploy this target last rolled back
	// (or Swarm did), until a later deploy of it succeeds or finds it up
	// to date: an unforced request for it is refused.
	RolledBack string `json:"rolled_back_digest,omitempty"`
	// Refused is the digest a gate last rejected for this target (see
	// ErrRejected), until a later deploy succeeds or finds it up to date:
	// an unforced request for it is refused without asking the gate again.
	Refused string `json:"refused_digest,omitempty"`
	// LastWebhook is when a webhook delivery last asked for this target
	// (a request the deployer accepted); the poller stays quiet while
	// deliveries arrive.
	LastWebhook time.Time `json:"last_webhook,omitzero"`
	// Labels are the target's hookd.* labels (see HookdLabels), for the
	// parts of hookd that read one of their own (the reporters).
	Labels map[string]string `json:"labels,omitempty"`
}

// HookdLabels returns the labels whose key starts with "hookd.", or nil.
// A target keeps only these: the rest (Compose's, the image's) are many
// and of no use to hookd.
func HookdLabels(labels map[string]string) map[string]string {
	var out map[string]string
	for k, v := range labels {
		if strings.HasPrefix(k, "hookd.") {
			if out == nil {
				out = make(map[string]string)
			}
			out[k] = v
		}
	}
	return out
}

// Matches reports whether the target follows ref's repository and tag.
func (t Target) Matches(ref ImageRef) bool {
	return t.Image == ref.Repository() && t.Tag == ref.Tag
}

// Suffixes of the names hookd gives containers during a swap: the new
// version while it is created, the old one while the new one proves
// itself, and a new version that failed its gate.
const (
	SuffixNew    = ".hookd-new"
	SuffixOld    = ".hookd-old"
	SuffixFailed = ".hookd-failed"
)

// Eligible applies the rules every part of hookd shares before it touches
// a container: it opted in (LabelEnable=true), it is no Swarm task (the
// service is the target), and it is not one of hookd's temporary names.
func Eligible(name string, labels map[string]string) bool {
	if labels[LabelEnable] != "true" {
		return false
	}
	for k := range labels {
		if strings.HasPrefix(k, "com.docker.swarm.") {
			return false
		}
	}
	for _, s := range []string{SuffixNew, SuffixOld, SuffixFailed} {
		if strings.HasSuffix(name, s) {
			return false
		}
	}
	return true
}

// Scope narrows the targets to containers and services that also carry a
// label: "key=value" or "key". Several hookd (or test runs) can then share
// one engine without touching each other's containers. The zero Scope
// contains everything.
type Scope string

// Contains reports whether labels are in scope.
func (s Scope) Contains(labels map[string]string) bool {
	if s == "" {
		return true
	}
	key, value, hasValue := strings.Cut(string(s), "=")
	v, ok := labels[key]
	return ok && (!hasValue || v == value)
}

// LabelDuration reads a Go duration from labels[key]: def when the label is
// absent, def and false when it is not a positive duration.
func LabelDuration(labels map[string]string, key string, def time.Duration) (time.Duration, bool) {
	v, ok := labels[key]
	if !ok {
		return def, true
	}
	if d, err := time.ParseDuration(v); err == nil && d > 0 {
		return d, true
	}
	return def, false
}
