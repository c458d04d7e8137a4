package deployer

import (
	"context"
	"sort"
	"sync"

	"github.com/and3rn3t/hookd/internal/deploy"
)

// defaultHistory bounds the jobs memState keeps per target.
const defaultHistory = 1000

// memState is an in-memory State for unit tests that need no disk.
type memState struct {
	mu       sync.Mutex
	max      int
	jobs     map[string]deploy.Job
	byTarget map[string][]string // job ids in insertion order
	steps    map[string]deploy.Step
}

var _ State = (*memState)(nil)

func newMemState(maxPerTarget int) *memState {
	if maxPerTarget <= 0 {
		maxPerTarget = defaultHistory
	}
	return &memState{
		max:      maxPerTarget,
		jobs:     make(map[string]deploy.Job),
		byTarget: make(map[string][]string),
		steps:    make(map[string]deploy.Step),
	}
}

func (s *memState) PutJob(_ context.Context, j deploy.Job) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.jobs[j.ID]; !ok {
		s.byTarget[j.Target] = append(s.byTarget[j.Target], j.ID)
	}
	s.jobs[j.ID] = j.Clone()
	s.trim(j.Target)
	return nil
}

// trim drops the oldest final jobs of target beyond the bound. Live jobs are
// never dropped: they are pending requests.
func (s *memState) trim(target string) {
	ids := s.byTarget[target]
	excess := len(ids) - s.max
	if excess <= 0 {
		return
	}
	kept := ids[:0]
	for _, id := range ids {
		if excess > 0 && s.jobs[id].Status.Final() {
			delete(s.jobs, id)
			excess--
			continue
		}
		kept = append(kept, id)
	}
	s.byTarget[target] = kept
}

func (s *memState) Jobs(_ context.Context, f deploy.JobFilter) ([]deploy.Job, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []deploy.Job
	for _, j := range s.jobs {
		if f.Target != "" && j.Target != f.Target {
			continue
		}
		out = append(out, j.Clone())
	}
	sort.Slice(out, func(a, b int) bool {
		if !out[a].CreatedAt.Equal(out[b].CreatedAt) {
			return out[a].CreatedAt.After(out[b].CreatedAt)
		}
		return out[a].ID > out[b].ID
	})
	if f.Limit > 0 && len(out) > f.Limit {
		out = out[:f.Limit]
	}
	return out, nil
}

func (s *memState) Job(_ context.Context, id string) (deploy.Job, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	j, ok := s.jobs[id]
	if !ok {
		return deploy.Job{}, deploy.ErrJobNotFound
	}
	return j.Clone(), nil
}

func (s *memState) PutStep(_ context.Context, st deploy.Step) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.steps[st.Target] = st
	return nil
}

func (s *memState) Steps(_ context.Context) ([]deploy.Step, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]deploy.Step, 0, len(s.steps))
	for _, st := range s.steps {
		out = append(out, st)
	}
	sort.Slice(out, func(a, b int) bool { return out[a].Target < out[b].Target })
	return out, nil
}

func (s *memState) DeleteStep(_ context.Context, target string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.steps, target)
	return nil
}
