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
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(exitCode(err, os.Stderr))
}
