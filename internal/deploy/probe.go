package deploy

// Labels of the start-first strategy and of health probes (see the
// containers package): a target opts in to start-first with
// LabelStrategy=start-first, and to a probe with LabelProbe.
const (
	// LabelDrain is how long the old container keeps serving next to the
	// new one, once the new one carries its aliases, before it gets its
	// stop signal (a Go duration; start-first only).
	LabelDrain = "hookd.drain"
	// LabelProbe is "http://:PORT/PATH" or "tcp://:PORT": what hookd asks
	// of the new container before its gate opens.
	LabelProbe = "hookd.probe"
	// LabelProbeExpect is the HTTP status the probe wants; any 2xx or 3xx
	// passes without it.
	LabelProbeExpect = "hookd.probe-expect"
	// LabelProbeInterval is the time between two probes (a Go duration).
	LabelProbeInterval = "hookd.probe-interval"
	// LabelProbeSuccesses is how many probes in a row must pass.
	LabelProbeSuccesses = "hookd.probe-successes"
)
