package containers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/pkg/stdcopy"

	"github.com/and3rn3t/hookd/internal/deploy"
	"github.com/and3rn3t/hookd/internal/strategy"
)

// Lifecycle hooks are commands a container's labels ask hookd to run
// inside it through the Engine API (exec): hookd.pre-update in the old
// container before the new one is created (a database dump, `rcon-cli
// save-all`), hookd.post-update in the new one once it passed its gate.
// Watchtower's lifecycle labels are read when hookd's are absent.

// Hook phases.
const (
	hookPreUpdate  = "pre-update"
	hookPostUpdate = "post-update"
)

const (
	defaultHookTimeout = 60 * time.Second
	// hookOutputMax bounds the output kept of a hook (its end).
	hookOutputMax = 4 << 10
)

// hook is one lifecycle command of a container.
type hook struct {
	phase   string
	label   string // the label it came from
	cmd     []string
	timeout time.Duration // 0: only the deploy's own deadline
	abort   bool          // a failing pre-update hook stops the deploy
}

// hookFor returns the container's hook for phase, if it has one. A
// malformed command or timeout is an error: a hook must not be skipped
// quietly because of a typo.
func hookFor(labels map[string]string, phase string) (hook, bool, error) {
	own, tower := deploy.LabelPreUpdate, deploy.LabelWatchtowerPreUpdate
	towerTimeout := deploy.LabelWatchtowerPreUpdateTimeout
	if phase == hookPostUpdate {
		own, tower, towerTimeout = deploy.LabelPostUpdate, deploy.LabelWatchtowerPostUpdate, deploy.LabelWatchtowerPostUpdateTimeout
	}
	h := hook{phase: phase, label: own, timeout: defaultHookTimeout, abort: labels[deploy.LabelPreUpdateAbort] != "false"}
	value, ok := labels[own]
	if !ok {
		h.label = tower
		if value, ok = labels[tower]; !ok {
			return hook{}, false, nil
		}
		if v, set := labels[towerTimeout]; set {
			minutes, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil || minutes < 0 {
				return hook{}, false, fmt.Errorf("label %s=%q: want a whole number of minutes", towerTimeout, v)
			}
			h.timeout = time.Duration(minutes) * time.Minute // 0: no timeout of its own, as for watchtower
		}
	}
	if v, set := labels[deploy.LabelHookTimeout]; set {
		d, err := time.ParseDuration(strings.TrimSpace(v))
		if err != nil || d <= 0 {
			return hook{}, false, fmt.Errorf("label %s=%q: want a positive Go duration (e.g. 2m)", deploy.LabelHookTimeout, v)
		}
		h.timeout = d
	}
	cmd, err := hookCommand(value)
	if err != nil {
		return hook{}, false, fmt.Errorf("label %s: %w", h.label, err)
	}
	h.cmd = cmd
	return h, true, nil
}

// hookCommand turns a label value into the command to exec: a JSON array
// runs as is (for images without a shell), anything else with /bin/sh -c.
func hookCommand(v string) ([]string, error) {
	v = strings.TrimSpace(v)
	if v == "" {
		return nil, errors.New("empty command")
	}
	if !strings.HasPrefix(v, "[") {
		return []string{"/bin/sh", "-c", v}, nil
	}
	var cmd []string
	if err := json.Unmarshal([]byte(v), &cmd); err != nil || len(cmd) == 0 || cmd[0] == "" {
		return nil, fmt.Errorf("%q is neither a shell command nor a JSON array of strings", v)
	}
	return cmd, nil
}

// hookResult is how a hook ended.
type hookResult struct {
	code     int
	output   string // stdout and stderr as they came, the last hookOutputMax bytes
	timedOut bool
}

func (h hook) describe(name string) string {
	return fmt.Sprintf("%s hook of %s (%s)", h.phase, name, h.label)
}

// String says how the hook ended, with its output.
func (res hookResult) String() string {
	s := fmt.Sprintf("exited %d", res.code)
	if res.timedOut {
		s = "did not finish in time"
	}
	if out := strings.TrimSpace(res.output); out != "" {
		s += ": " + out
	}
	return s
}

// runHook runs h in the running container id and waits for it, at most
// h.timeout. A hook that times out keeps running in the container (the
// Engine API cannot stop an exec); hookd stops waiting for it.
func runHook(ctx context.Context, docker deployDocker, id string, h hook) (hookResult, error) {
	if h.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, h.timeout)
		defer cancel()
	}
	ex, err := docker.ContainerExecCreate(ctx, id, container.ExecOptions{Cmd: h.cmd, AttachStdout: true, AttachStderr: true})
	if err != nil {
		return hookResult{}, fmt.Errorf("exec %s: %w", h.label, err)
	}
	att, err := docker.ContainerExecAttach(ctx, ex.ID, container.ExecAttachOptions{})
	if err != nil {
		return hookResult{}, fmt.Errorf("exec %s: %w", h.label, err)
	}
	defer att.Close()
	out := &tailBuffer{max: hookOutputMax}
	copied := make(chan error, 1)
	go func() {
		// One writer for both streams keeps their order.
		_, err := stdcopy.StdCopy(out, out, att.Reader)
		copied <- err
	}()
	select {
	case <-copied:
	case <-ctx.Done():
		att.Close() // unblocks the copy
		<-copied
		return hookResult{output: out.String(), timedOut: true}, nil
	}
	// The exec ends right after its streams close; ask until the engine
	// says so (rarely more than once).
	for range 50 {
		in, err := docker.ContainerExecInspect(ctx, ex.ID)
		if err != nil {
			return hookResult{output: out.String()}, fmt.Errorf("inspect exec of %s: %w", h.label, err)
		}
		if !in.Running {
			return hookResult{code: in.ExitCode, output: out.String()}, nil
		}
		select {
		case <-time.After(20 * time.Millisecond):
		case <-ctx.Done():
			return hookResult{output: out.String(), timedOut: true}, nil
		}
	}
	return hookResult{output: out.String(), timedOut: true}, nil
}

// preUpdate runs the pre-update hooks of cs (running containers about to
// be stopped for a new version), publishing the running_hooks stage. A
// hook that fails or times out ends the deploy (the error says which and
// what it printed), unless its container says hookd.pre-update-abort=false.
// Every strategy that replaces containers calls it before it creates the
// new one.
func preUpdate(ctx context.Context, docker deployDocker, run *strategy.Run, cs ...containerInspect) error {
	staged := false
	for _, c := range cs {
		name := strings.TrimPrefix(c.Name, "/")
		h, ok, err := hookFor(c.Config.Labels, hookPreUpdate)
		if err != nil {
			return fmt.Errorf("pre-update hook of %s: %w", name, err)
		}
		if !ok {
			continue
		}
		if !staged {
			run.Stage(deploy.StageHooks)
			staged = true
		}
		res, err := runHook(ctx, docker, c.ID, h)
		if err == nil && res.code == 0 && !res.timedOut {
			run.Log.Info("hook ran", "hook", h.phase, "container", name)
			run.Job.Notes = append(run.Job.Notes, h.describe(name)+" "+res.String())
			continue
		}
		what := h.describe(name) + " " + res.String()
		if err != nil {
			what = h.describe(name) + " failed: " + err.Error()
		}
		if h.abort {
			return errors.New(what + "; deploy stopped before anything was changed (" + deploy.LabelPreUpdateAbort + "=false lets it go on)")
		}
		run.Log.Warn("hook failed; deploy goes on", "hook", h.phase, "container", name, "exit_code", res.code, "timed_out", res.timedOut)
		run.Job.Notes = append(run.Job.Notes, what+"; deploy went on ("+deploy.LabelPreUpdateAbort+"=false)")
	}
	return nil
}

// postUpdate runs the post-update hook of the new container c, which
// passed its gate and now runs as name. Its failure is recorded on the
// job; it does not undo a deploy that passed its gate.
func postUpdate(ctx context.Context, docker deployDocker, run *strategy.Run, c containerInspect, name string) {
	h, ok, err := hookFor(c.Config.Labels, hookPostUpdate)
	if err != nil {
		run.Job.Notes = append(run.Job.Notes, "post-update hook of "+name+": "+err.Error())
		return
	}
	if !ok {
		return
	}
	run.Stage(deploy.StageHooks)
	res, err := runHook(ctx, docker, c.ID, h)
	switch {
	case err != nil:
		run.Log.Warn("hook failed", "hook", h.phase, "container", name, "err", err)
		run.Job.Notes = append(run.Job.Notes, h.describe(name)+" failed: "+err.Error())
	case res.code != 0 || res.timedOut:
		run.Log.Warn("hook failed", "hook", h.phase, "container", name, "exit_code", res.code, "timed_out", res.timedOut)
		run.Job.Notes = append(run.Job.Notes, h.describe(name)+" "+res.String())
	default:
		run.Log.Info("hook ran", "hook", h.phase, "container", name)
		run.Job.Notes = append(run.Job.Notes, h.describe(name)+" "+res.String())
	}
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	max int
	b   []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.b = append(t.b, p...)
	if over := len(t.b) - t.max; over > 0 {
		t.b = append(t.b[:0], t.b[over:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string { return string(t.b) }

var _ io.Writer = (*tailBuffer)(nil)
