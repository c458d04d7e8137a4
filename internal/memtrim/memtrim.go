// Package memtrim hands back memory hookd holds but no longer uses, once it
// is quiet again: the heap it grew while busy, and the pages of its own
// program that only start-up or a deploy ran.
//
// hookd spends almost all its life waiting. What start-up, a poll round or a
// deploy touched stays resident until the kernel is short of memory: the Go
// runtime keeps freed heap up to its heap goal (4 MiB at least), and the
// kernel keeps every page of the binary a fault mapped (it maps 64 KiB
// around each one) in hookd's page tables. On a Pi that memory is what the
// app hookd deploys wants. A trim forces a collection and returns every free
// heap page (debug.FreeOSMemory), then unmaps the binary's read-only pages
// (madvise MADV_DONTNEED on its own text and read-only data; never on a
// writable mapping). The unmapped pages stay in the page cache, where the
// kernel can reclaim them first; code hookd runs again comes back on a minor
// fault.
package memtrim

import (
	"context"
	"log/slog"
	"time"
)

// Config tunes Run. Zero values take the defaults.
type Config struct {
	// Every is how often Run looks at hookd's resident memory (default 15s).
	Every time.Duration
	// Growth is how much resident memory must have grown over the least
	// Run read since the last trim for another to be worth it (default
	// 1 MiB). What hookd still runs comes back within seconds of a trim, so
	// the reading just after one is not the reference: the looks after it
	// are.
	Growth int64
	// Gap is the least time between two trims (default 1m).
	Gap time.Duration
	// Settle is how long start-up takes (reconcile, first listing, the
	// first registry round, spread over up to 30 s); the first trim waits
	// for it (default 1m).
	Settle time.Duration
	// Busy reports work in flight (a deploy queued or running); Run does
	// not trim then. Nil means never busy.
	Busy func() bool
}

// Run trims once start-up has settled, at the first look hookd is not
// busy after Config.Settle, and later
// whenever it is not busy, Config.Gap has passed and resident memory grew by
// Config.Growth over the least it read since the last trim. It returns
// when ctx is done, or at once where resident memory cannot be read (not
// Linux).
func Run(ctx context.Context, cfg Config, logger *slog.Logger) {
	s := newState(cfg, time.Now())
	if _, err := resident(); err != nil {
		logger.Debug("memory trims off", "err", err)
		return
	}
	tick := time.NewTicker(s.cfg.Every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			rss, err := resident()
			if err != nil || !s.look(now, rss) {
				continue
			}
			start := time.Now()
			dropped, err := trim()
			s.trimmed(now)
			after, _ := resident()
			attrs := []any{"resident_bytes_before", rss, "resident_bytes_after", after,
				"program_bytes_unmapped", dropped, "duration_seconds", time.Since(start).Seconds()}
			if err != nil {
				attrs = append(attrs, "err", err)
			}
			logger.Debug("memory trimmed", attrs...)
		}
	}
}

// state decides when to trim; it is separate from Run so that the rule can
// be tested without waiting.
type state struct {
	cfg   Config
	start time.Time
	last  time.Time // zero until the first trim
	low   int64     // least resident bytes read since the last trim; 0: none yet
}

func newState(cfg Config, start time.Time) *state {
	if cfg.Every <= 0 {
		cfg.Every = 15 * time.Second
	}
	if cfg.Growth <= 0 {
		cfg.Growth = 1 << 20
	}
	if cfg.Gap <= 0 {
		cfg.Gap = time.Minute
	}
	if cfg.Settle <= 0 {
		cfg.Settle = time.Minute
	}
	return &state{cfg: cfg, start: start}
}

// look takes a reading of resident memory and reports whether to trim now.
func (s *state) look(now time.Time, rss int64) bool {
	if s.low == 0 || rss < s.low {
		s.low = rss
	}
	if s.cfg.Busy != nil && s.cfg.Busy() {
		return false
	}
	if s.last.IsZero() {
		return now.Sub(s.start) >= s.cfg.Settle
	}
	return now.Sub(s.last) >= s.cfg.Gap && rss >= s.low+s.cfg.Growth
}

func (s *state) trimmed(now time.Time) {
	s.last, s.low = now, 0
}
