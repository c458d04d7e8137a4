package containers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/and3rn3t/hookd/internal/deploy"

	"github.com/and3rn3t/hookd/internal/registry"
	"github.com/docker/docker/api/types/image"
)

// pullProgressEvery is how often a running pull is logged.
const pullProgressEvery = 5 * time.Second

// pullMessage is one line of the pull stream (see docker's jsonmessage).
type pullMessage struct {
	ID             string `json:"id"`
	Status         string `json:"status"`
	ProgressDetail struct {
		Current int64 `json:"current"`
		Total   int64 `json:"total"`
	} `json:"progressDetail"`
	Error       string `json:"error"`
	ErrorDetail *struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	} `json:"errorDetail"`
}

// pull pulls ref's repository at digest (never by tag: the local tag moves
// only once the new version passed its gate) and reads the stream to its
// end: closing it early would abort the pull. Registry errors in the stream
// (401, 404, 429, …) become the returned error.
func (r *Recreate) pull(ctx context.Context, ref deploy.ImageRef, digest string, log *slog.Logger) error {
	s := ref.Repository() + "@" + digest
	auth, err := registry.EncodedAuth(ctx, r.cfg.Keychain, ref.Registry)
	if err != nil {
		return fmt.Errorf("pull %s: %w", s, err)
	}
	rc, err := r.docker.ImagePull(ctx, s, image.PullOptions{RegistryAuth: auth})
	if err != nil {
		return fmt.Errorf("pull %s: %w", s, err)
	}
	defer rc.Close()
	p := newPullProgress(log)
	err = p.read(rc)
	// Drain whatever is left so the engine sees the pull through.
	_, _ = io.Copy(io.Discard, rc)
	if err != nil {
		return fmt.Errorf("pull %s: %w", s, err)
	}
	return nil
}

type layerState struct {
	done       bool
	cur, total int64
}

type pullProgress struct {
	log    *slog.Logger
	layers map[string]*layerState
	order  []string
	last   time.Time
	now    func() time.Time
}

func newPullProgress(log *slog.Logger) *pullProgress {
	return &pullProgress{log: log, layers: map[string]*layerState{}, now: time.Now, last: time.Now()}
}

// read consumes the stream and returns the first error message in it.
func (p *pullProgress) read(r io.Reader) error {
	dec := json.NewDecoder(r)
	for {
		var m pullMessage
		if err := dec.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) {
				done, total, bytes := p.totals()
				p.log.Info("pull finished", "layers_done", done, "layers_total", total, "bytes", bytes)
				return nil
			}
			return fmt.Errorf("read pull stream: %w", err)
		}
		if m.ErrorDetail != nil && m.ErrorDetail.Message != "" {
			return errors.New(strings.TrimSpace(m.ErrorDetail.Message))
		}
		if m.Error != "" {
			return errors.New(strings.TrimSpace(m.Error))
		}
		p.update(m)
	}
}

func (p *pullProgress) update(m pullMessage) {
	if m.ID == "" || !isLayerStatus(m.Status) {
		return
	}
	l := p.layers[m.ID]
	if l == nil {
		l = &layerState{}
		p.layers[m.ID] = l
		p.order = append(p.order, m.ID)
	}
	switch m.Status {
	case "Downloading":
		l.cur, l.total = m.ProgressDetail.Current, m.ProgressDetail.Total
	case "Download complete", "Verifying Checksum":
		if l.total > 0 {
			l.cur = l.total
		}
	case "Pull complete", "Already exists":
		if !l.done {
			l.done = true
			if l.total > 0 {
				l.cur = l.total
			}
			p.maybeLog(true)
			return
		}
	}
	p.maybeLog(false)
}

// isLayerStatus tells layer lines from "Pulling from …", "Digest: …" and the
// like, which carry the tag or nothing in id.
func isLayerStatus(s string) bool {
	switch s {
	case "Pulling fs layer", "Waiting", "Downloading", "Verifying Checksum", "Download complete",
		"Extracting", "Pull complete", "Already exists", "Retrying":
		return true
	}
	return strings.HasPrefix(s, "Retrying")
}

// maybeLog logs progress when a layer completes, at most once per
// pullProgressEvery otherwise.
func (p *pullProgress) maybeLog(layerDone bool) {
	now := p.now()
	if !layerDone && now.Sub(p.last) < pullProgressEvery {
		return
	}
	p.last = now
	done, total, bytes := p.totals()
	p.log.Info("pull progress", "layers_done", done, "layers_total", total, "bytes", bytes)
}

func (p *pullProgress) totals() (done, total int, bytes int64) {
	for _, id := range p.order {
		l := p.layers[id]
		total++
		if l.done {
			done++
		}
		bytes += l.cur
	}
	return done, total, bytes
}
