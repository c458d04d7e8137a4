package deployer

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/and3rn3t/hookd/internal/deploy"
)

// bus is the one place every job transition is published. Observers are
// called in line and must be quick and never block (metrics, logs);
// subscribers (notifications, GitHub statuses, the status page) get a
// buffered channel each, and one that falls behind loses events, counted,
// rather than slowing a deploy.
type bus struct {
	dropped *prometheus.CounterVec // by subscriber name

	mu        sync.Mutex
	observers []func(deploy.Event)
	subs      map[*subscriber]struct{}
}

type subscriber struct {
	name string
	ch   chan deploy.Event
}

func (b *bus) observe(f func(deploy.Event)) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.observers = append(b.observers, f)
}

func (b *bus) subscribe(name string, buf int) (<-chan deploy.Event, func()) {
	s := &subscriber{name: name, ch: make(chan deploy.Event, max(buf, 1))}
	b.mu.Lock()
	if b.subs == nil {
		b.subs = make(map[*subscriber]struct{})
	}
	b.subs[s] = struct{}{}
	b.mu.Unlock()
	if b.dropped != nil {
		b.dropped.WithLabelValues(name)
	}
	var once sync.Once
	return s.ch, func() {
		once.Do(func() {
			b.mu.Lock()
			delete(b.subs, s)
			b.mu.Unlock()
			close(s.ch)
		})
	}
}

// publish sends kind for j to every observer and subscriber.
func (b *bus) publish(kind string, j deploy.Job) {
	e := deploy.Event{Kind: kind, At: time.Now().UTC(), Job: j.Clone()}
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, f := range b.observers {
		f(e)
	}
	for s := range b.subs {
		select {
		case s.ch <- e:
		default:
			if b.dropped != nil {
				b.dropped.WithLabelValues(s.name).Inc()
			}
		}
	}
}
