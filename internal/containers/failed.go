package containers

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/pkg/stdcopy"

	"github.com/and3rn3t/hookd/internal/deploy"
)

// What is kept of a version that failed its gate: its last log lines, each
// cut to a length, read from at most logReadMax bytes.
const (
	failedLogLines = 20
	failedLineMax  = 512
	logReadMax     = 64 << 10
)

// failedVersion collects what a user needs to see why the container id,
// which failed its gate, failed: its exit code (when it exited or could not
// start), its last health check and its last log lines. hookd removes the
// container afterwards, so this is all that is left of it. v is the
// gate's verdict: a container that exited and was restarted by its restart
// policy runs again, and only the gate saw its exit code. It reads what
// it can and never fails.
func (r *Recreate) failedVersion(ctx context.Context, id, name string, v verdict) *deploy.FailedVersion {
	f := &deploy.FailedVersion{Container: name}
	var code int
	if v.reason == deploy.ReasonExited {
		if _, err := fmt.Sscanf(v.detail, "exit code %d", &code); err == nil {
			f.ExitCode = &code
		}
	}
	c, err := r.docker.ContainerInspect(ctx, id)
	tty := false
	if err == nil && c.ContainerJSONBase != nil && c.State != nil {
		if !c.State.Running && !c.State.Restarting && (c.State.Status == container.StateExited || c.State.Status == container.StateDead ||
			c.State.Status == container.StateCreated && c.State.ExitCode != 0) {
			code = c.State.ExitCode
			f.ExitCode = &code
		}
		if h := c.State.Health; h != nil && len(h.Log) > 0 {
			// What the last check printed; not HealthOutput's "exit code N"
			// stand-in, which for a container that crashed only says that
			// its check was killed with it.
			if out := strings.TrimSpace(h.Log[len(h.Log)-1].Output); out != "" {
				f.Health = HealthOutput(c)
			}
		}
		tty = c.Config != nil && c.Config.Tty
	}
	rc, err := r.docker.ContainerLogs(ctx, id, container.LogsOptions{
		ShowStdout: true, ShowStderr: true, Tail: "40",
	})
	if err != nil {
		return f
	}
	defer rc.Close()
	var src io.Reader = io.LimitReader(rc, logReadMax)
	if !tty {
		// One writer for both streams keeps the lines in the order they came.
		pr, pw := io.Pipe()
		go func(framed io.Reader) {
			_, err := stdcopy.StdCopy(pw, pw, framed)
			pw.CloseWithError(err)
		}(src)
		defer pr.Close()
		src = pr
	}
	f.Logs = lastLines(src, failedLogLines)
	return f
}

// lastLines returns the last n non-empty lines of r, each cut to
// failedLineMax bytes, reading it to its end.
func lastLines(r io.Reader, n int) []string {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), logReadMax)
	var out []string
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), "\r")
		if strings.TrimSpace(line) == "" {
			continue
		}
		if len(line) > failedLineMax {
			line = line[:failedLineMax] + "…"
		}
		out = append(out, line)
		if len(out) > n {
			out = out[1:]
		}
	}
	_, _ = io.Copy(io.Discard, r)
	return out
}
