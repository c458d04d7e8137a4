package web

import (
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/and3rn3t/hookd/internal/deploy"
)

// subscriberName is the pages' name on the job event bus (the label of
// hookd_job_events_dropped_total): one for all open pages, so the label
// stays a fixed set.
const subscriberName = "status_page"

// streamBuffer is how many events one open page may fall behind by before
// it loses some (it then refreshes on the next one).
const streamBuffer = 32

// writeWait bounds one write to a page that stopped reading.
const writeWait = 15 * time.Second

// event is what a page is told of a job event: enough to decide whether to
// refresh, nothing it could not see on the page anyway.
type event struct {
	Kind   string        `json:"kind"`
	Job    string        `json:"job"`
	Target string        `json:"target"`
	Status deploy.Status `json:"status"`
	Stage  deploy.Stage  `json:"stage,omitempty"`
	At     time.Time     `json:"at"`
}

// Events returns the handler of GET /events: a Server-Sent Events stream
// of the deployer's job events, all of them or, with ?target=NAME or
// ?job=ID, those of one target or job. An open page costs one connection
// and one subscription; nothing is sent while no job changes. The stream
// ends when the client goes or hookd begins to shut down; browsers then
// reconnect by themselves. Beyond MaxStreams open streams it answers 503.
func (s *Site) Events() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n := s.streams.Add(1); int(n) > s.cfg.MaxStreams {
			s.streams.Add(-1)
			w.Header().Set("Retry-After", "30")
			http.Error(w, "too many open pages", http.StatusServiceUnavailable)
			return
		}
		defer s.streams.Add(-1)
		q := r.URL.Query()
		target, job := q.Get("target"), q.Get("job")

		rc := http.NewResponseController(w)
		h := w.Header()
		h.Set("Content-Type", "text/event-stream")
		h.Set("Cache-Control", "no-store")
		// Tell nginx not to buffer the stream.
		h.Set("X-Accel-Buffering", "no")
		w.WriteHeader(http.StatusOK)

		events, cancel := s.deps.Subscribe(subscriberName, streamBuffer)
		defer cancel()
		write := func(format string, args ...any) bool {
			// The server's WriteTimeout would cut the stream; each write
			// gets its own deadline instead.
			_ = rc.SetWriteDeadline(time.Now().Add(writeWait))
			if _, err := fmt.Fprintf(w, format, args...); err != nil {
				return false
			}
			return rc.Flush() == nil
		}
		if !write("retry: 3000\n: hookd job events\n\n") {
			return
		}
		for {
			select {
			case <-r.Context().Done():
				return
			case <-s.cfg.Stopping: // nil never fires
				return
			case e, ok := <-events:
				if !ok {
					return
				}
				if target != "" && e.Job.Target != target || job != "" && e.Job.ID != job {
					continue
				}
				b, err := json.Marshal(event{
					Kind: e.Kind, Job: e.Job.ID, Target: e.Job.Target,
					Status: e.Job.Status, Stage: e.Job.Stage, At: e.At,
				})
				if err != nil {
					continue
				}
				if !write("event: job\ndata: %s\n\n", b) {
					return
				}
			}
		}
	})
}
