// Command hookd deploys new images from GitHub Container Registry to the
// containers of a Docker host that ask for it, within seconds of the push.
//
// hookd alone serves; "hookd deploy" and "hookd status" talk to a running
// hookd through its API; "hookd healthcheck" is for the container image.
package main

import (
	"context"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
)

// defaultMemoryLimit is the Go runtime's soft memory limit unless
// GOMEMLIMIT says otherwise. hookd idles at about 8 MiB of private memory;
// without a limit the garbage collector lets the heap grow to twice what
// is live before it runs, so a flood of strangers' connections took it to
// about 30 MiB. With the limit, the collector runs earlier as the heap nears
// it and returns freed memory to the system sooner: the same flood peaks at
// about 21 MiB. It is soft: work that needs more gets it, at the cost of
// more collections.
const defaultMemoryLimit = 24 << 20

// softMemoryLimit sets defaultMemoryLimit unless GOMEMLIMIT is set (to a
// size, or to "off" for none), and returns the limit in force.
func softMemoryLimit(getenv func(string) string) int64 {
	if getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(defaultMemoryLimit)
	}
	return debug.SetMemoryLimit(-1)
}

func main() {
	softMemoryLimit(os.Getenv)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(exitCode(err, os.Stderr))
}
