package deploy

import (
	"slices"
	"sort"
)

// SortByDependencies orders targets so that each comes after the targets
// of the set it depends on (Target.DependsOn), and by name where the
// dependencies leave the order open. A cycle does not stop the sort: its
// targets follow in name order once nothing else is left (the strategy
// refuses a deploy whose dependencies form a cycle).
func SortByDependencies(targets []Target) {
	sort.Slice(targets, func(a, b int) bool { return targets[a].Name < targets[b].Name })
	in := make(map[string]bool, len(targets))
	for _, t := range targets {
		in[t.Name] = true
	}
	done := make(map[string]bool, len(targets))
	out := make([]Target, 0, len(targets))
	for len(out) < len(targets) {
		progress := false
		for _, t := range targets {
			if done[t.Name] || !ready(t, in, done) {
				continue
			}
			done[t.Name] = true
			out = append(out, t)
			progress = true
			break // the next one is again the first ready by name
		}
		if !progress {
			for _, t := range targets {
				if !done[t.Name] {
					done[t.Name] = true
					out = append(out, t)
					break
				}
			}
		}
	}
	copy(targets, out)
}

// ready reports whether every dependency of t in the set is done.
func ready(t Target, in, done map[string]bool) bool {
	return !slices.ContainsFunc(t.DependsOn, func(d string) bool { return in[d] && !done[d] && d != t.Name })
}
