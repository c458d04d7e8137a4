package dockertest

import (
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"
)

// Answer is one request of a Load.
type Answer struct {
	At      time.Time // when the request was sent
	Latency time.Duration
	Status  int    // 0 when the request failed
	Body    string // trimmed, at most 256 bytes
	Err     error
}

// Failed reports whether the request got no 200.
func (a Answer) Failed() bool { return a.Err != nil || a.Status != http.StatusOK }

// Load sends GET requests to a URL at a steady rate, each on its own
// goroutine, so that a slow answer does not slow the rate (an open loop,
// as many independent clients would). Its client keeps connections alive,
// as browsers do.
type Load struct {
	url  string
	hc   *http.Client
	stop chan struct{}
	wg   sync.WaitGroup

	mu      sync.Mutex
	answers []Answer
}

// StartLoad starts sending perSecond requests a second to url until Stop.
func StartLoad(url string, perSecond int) *Load {
	l := &Load{
		url:  url,
		stop: make(chan struct{}),
		hc: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
			MaxIdleConnsPerHost: 64, IdleConnTimeout: time.Minute,
		}},
	}
	every := time.Second / time.Duration(perSecond)
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		// Request n leaves at start+n*every: a sender that fell behind (a
		// busy machine) catches up instead of lowering the rate.
		start := time.Now()
		for n := 1; ; n++ {
			t := time.NewTimer(time.Until(start.Add(time.Duration(n) * every)))
			select {
			case <-l.stop:
				t.Stop()
				return
			case <-t.C:
			}
			l.wg.Add(1)
			go func() {
				defer l.wg.Done()
				l.record(l.get())
			}()
		}
	}()
	return l
}

func (l *Load) get() Answer {
	a := Answer{At: time.Now()}
	resp, err := l.hc.Get(l.url)
	if err != nil {
		a.Latency, a.Err = time.Since(a.At), err
		return a
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, 256))
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	a.Latency, a.Status, a.Body, a.Err = time.Since(a.At), resp.StatusCode, strings.TrimSpace(string(b)), err
	return a
}

func (l *Load) record(a Answer) {
	l.mu.Lock()
	l.answers = append(l.answers, a)
	l.mu.Unlock()
}

// Answers returns a copy of the answers so far, in the order sent.
func (l *Load) Answers() []Answer {
	l.mu.Lock()
	out := append([]Answer(nil), l.answers...)
	l.mu.Unlock()
	sort.Slice(out, func(a, b int) bool { return out[a].At.Before(out[b].At) })
	return out
}

// Stop stops sending, waits for the requests out, and returns every answer.
func (l *Load) Stop() []Answer {
	select {
	case <-l.stop:
	default:
		close(l.stop)
	}
	l.wg.Wait()
	l.hc.CloseIdleConnections()
	return l.Answers()
}

// LoadSummary describes the answers sent within a window.
type LoadSummary struct {
	Requests int
	Failed   int
	Slowest  time.Duration
	PerSec   float64
	Bodies   map[string]int // how many answers had each body
	// FirstFailure describes the first failed request, if any.
	FirstFailure string
	// SlowestAt is when the slowest request was sent.
	SlowestAt time.Time
}

// Summarize describes the answers sent from from to to.
func Summarize(answers []Answer, from, to time.Time) LoadSummary {
	s := LoadSummary{Bodies: map[string]int{}}
	for _, a := range answers {
		if a.At.Before(from) || a.At.After(to) {
			continue
		}
		s.Requests++
		if a.Latency > s.Slowest {
			s.Slowest, s.SlowestAt = a.Latency, a.At
		}
		if a.Failed() {
			s.Failed++
			if s.FirstFailure == "" {
				s.FirstFailure = fmt.Sprintf("at %s after %v: status %d, %v, %q", a.At.Format("15:04:05.000"), a.Latency, a.Status, a.Err, a.Body)
			}
			continue
		}
		s.Bodies[a.Body]++
	}
	if d := to.Sub(from).Seconds(); d > 0 {
		s.PerSec = float64(s.Requests) / d
	}
	return s
}

func (s LoadSummary) String() string {
	return fmt.Sprintf("%d requests (%.0f/s), %d failed, slowest %v, answers %v",
		s.Requests, s.PerSec, s.Failed, s.Slowest.Round(time.Millisecond), s.Bodies)
}
