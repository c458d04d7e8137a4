package api

import (
	"time"

	"github.com/and3rn3t/hookd/internal/deployer"
)

// deployTarget mirrors the announced deployer.Target until the deployer
// exports it; then this becomes `type deployTarget = deployer.Target`.
type deployTarget struct {
	Name          string
	ID            string
	Kind          string
	Image         string
	Tag           string
	Ref           deployer.ImageRef
	ImageID       string
	Digest        string
	HealthTimeout time.Duration
}
