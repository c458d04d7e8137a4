package dockertest

import (
	"testing"
	"time"
)

// WaitFor polls cond every 50ms until it holds, and fails the test when
// timeout passes first, with what and cond's last description.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, desc := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not reached within %v: %s", what, timeout, desc)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
