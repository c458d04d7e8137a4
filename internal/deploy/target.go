package deploy

import "time"

// Labels hookd reads on containers and services. hookd never touches a
// container or service that is not labelled LabelEnable=true.
const (
	LabelEnable        = "hookd.enable"
	LabelHealthTimeout = "hookd.health-timeout"
	LabelStrategy      = "hookd.strategy"
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
	// container (the default), "service-update" for a service.
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
	// LastWebhook is when a webhook delivery last asked for this target
	// (a request the deployer accepted); the poller stays quiet while
	// deliveries arrive.
	LastWebhook time.Time `json:"last_webhook,omitzero"`
}

// Matches reports whether the target follows ref's repository and tag.
func (t Target) Matches(ref ImageRef) bool {
	return t.Image == ref.Repository() && t.Tag == ref.Tag
}
