package main

import (
	"runtime/debug"
	"testing"
)

// TestSoftMemoryLimit checks hookd's default soft memory limit applies
// unless GOMEMLIMIT is set, which then decides (the runtime read it at
// start; here the test process's own value stands for it).
func TestSoftMemoryLimit(t *testing.T) {
	prev := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(prev) })

	if got := softMemoryLimit(func(string) string { return "" }); got != defaultMemoryLimit {
		t.Errorf("without GOMEMLIMIT the limit is %d, want %d", got, defaultMemoryLimit)
	}
	debug.SetMemoryLimit(1 << 30) // as GOMEMLIMIT=1GiB would have set it
	env := map[string]string{"GOMEMLIMIT": "1GiB"}
	if got := softMemoryLimit(func(k string) string { return env[k] }); got != 1<<30 {
		t.Errorf("with GOMEMLIMIT=1GiB the limit is %d, want %d", got, 1<<30)
	}
}
