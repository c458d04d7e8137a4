package containers

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/network"

	"github.com/and3rn3t/hookd/internal/deploy"
	"github.com/and3rn3t/hookd/internal/strategy"
)

// Probe defaults.
const (
	defaultProbeInterval  = time.Second
	defaultProbeSuccesses = 2
	// reachTimeout bounds the connection that tells whether hookd can
	// reach a container at all: a network that drops hookd's packets
	// answers nothing, so a timeout means unreachable.
	reachTimeout = 2 * time.Second
	// probeBodyCap is how much of a failing answer goes into the job.
	probeBodyCap = 200
)

// probe is a target's hookd.probe: an HTTP GET or a TCP connection that the
// new container must pass, successes times in a row, before its gate opens.
// It is for images without a Docker HEALTHCHECK, or on top of one.
type probe struct {
	label     string // the label's value, for messages
	tcp       bool
	port      string
	path      string // http: path and query, "/" at least
	expect    int    // http: the status wanted; 0 takes any 2xx or 3xx
	interval  time.Duration
	successes int
}

// parseProbe reads the probe labels of a container: nil without
// hookd.probe. An error names the label at fault and what it takes.
func parseProbe(labels map[string]string) (*probe, error) {
	raw, ok := labels[deploy.LabelProbe]
	raw = strings.TrimSpace(raw)
	if !ok || raw == "" {
		return nil, nil
	}
	bad := func(why string) error {
		return fmt.Errorf("label %s=%q: %s (want http://:PORT/PATH or tcp://:PORT)", deploy.LabelProbe, raw, why)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, bad("not a URL")
	}
	p := &probe{label: raw, interval: defaultProbeInterval, successes: defaultProbeSuccesses}
	switch u.Scheme {
	case "http":
	case "tcp":
		p.tcp = true
	default:
		return nil, bad("the scheme must be http or tcp")
	}
	if u.User != nil || u.Hostname() != "" {
		return nil, bad("leave the host out: hookd finds the container's address")
	}
	n, err := strconv.Atoi(u.Port())
	if err != nil || n < 1 || n > 65535 {
		return nil, bad("a port is required")
	}
	p.port = u.Port()
	if p.tcp {
		if u.Path != "" && u.Path != "/" || u.RawQuery != "" {
			return nil, bad("a tcp probe takes no path")
		}
	} else {
		p.path = u.EscapedPath()
		if p.path == "" {
			p.path = "/"
		}
		if u.RawQuery != "" {
			p.path += "?" + u.RawQuery
		}
	}
	if v, ok := labels[deploy.LabelProbeExpect]; ok {
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil || n < 100 || n > 599 || p.tcp {
			return nil, fmt.Errorf("label %s=%q: want an HTTP status code (e.g. 200), with an http probe", deploy.LabelProbeExpect, v)
		}
		p.expect = n
	}
	if v, ok := labels[deploy.LabelProbeInterval]; ok {
		d, err := time.ParseDuration(strings.TrimSpace(v))
		if err != nil || d <= 0 {
			return nil, fmt.Errorf("label %s=%q: want a positive duration (e.g. 1s)", deploy.LabelProbeInterval, v)
		}
		p.interval = d
	}
	if v, ok := labels[deploy.LabelProbeSuccesses]; ok {
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("label %s=%q: want a whole number of at least 1", deploy.LabelProbeSuccesses, v)
		}
		p.successes = n
	}
	return p, nil
}

// attemptTimeout bounds one probe: its interval, but at least a second.
func (p *probe) attemptTimeout() time.Duration { return max(p.interval, time.Second) }

// try probes addr ("ip:port") once; nil means it passed.
func (p *probe) try(ctx context.Context, addr string) error {
	ctx, cancel := context.WithTimeout(ctx, p.attemptTimeout())
	defer cancel()
	if p.tcp {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return err
		}
		_ = c.Close()
		return nil
	}
	target := "http://" + addr + p.path
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return fmt.Errorf("probe %s: %w", target, err)
	}
	req.Header.Set("User-Agent", "hookd-probe")
	hc := &http.Client{
		// No proxy from the environment, no kept connection (each probe
		// must reach the app anew), no redirect followed: a 3xx passes.
		Transport:     &http.Transport{DisableKeepAlives: true},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, probeBodyCap))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if p.expect != 0 && resp.StatusCode == p.expect || p.expect == 0 && resp.StatusCode >= 200 && resp.StatusCode < 400 {
		return nil
	}
	msg := fmt.Sprintf("GET %s: status %d", target, resp.StatusCode)
	if b := printable(body); b != "" {
		msg += ": " + b
	}
	return errors.New(msg)
}

// printable keeps the first line of an answer, without control characters.
func printable(b []byte) string {
	s, _, _ := strings.Cut(strings.TrimSpace(string(b)), "\n")
	return strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return -1
		}
		return r
	}, s)
}

// probeAddress returns the address ("ip:port") at which hookd reaches port
// of c, and the network it is on; the error names the fix when there is
// none.
//
// Which network: hookd on the host (a systemd service, or a container with
// network_mode host) reaches the containers on every bridge network of its
// host, the default bridge and user-defined ones alike, internal ones too;
// not those on macvlan or ipvlan networks of the host's own interface, nor
// on overlay networks. Every address of c is tried, in network name order;
// a container on the host's network is reached on 127.0.0.1, one in
// another's namespace (network_mode container:) at that one's addresses.
// hookd in a container (the shipped docker-compose.yml) reaches only the
// networks its container is attached to: the engine drops traffic between
// bridge networks. Only c's addresses on those are tried, and none means
// hookd must join one of c's networks.
//
// An address is reachable when a TCP connection to it is accepted or
// refused: either way the container answered. One that times out or has no
// route is not.
func (r *Recreate) probeAddress(ctx context.Context, c containerInspect, port string) (addr, netName string, err error) {
	name := strings.TrimPrefix(c.Name, "/")
	hookdNets, onHost, err := r.hookdNetworks(ctx)
	if err != nil {
		return "", "", err
	}
	type candidate struct{ network, addr string }
	var cands []candidate
	var all []string
	var nets map[string]*network.EndpointSettings
	if c.NetworkSettings != nil {
		nets = c.NetworkSettings.Networks
	}
	var mode container.NetworkMode
	if c.HostConfig != nil {
		mode = c.HostConfig.NetworkMode
	}
	switch {
	case mode.IsHost() && onHost:
		cands = append(cands, candidate{"host", net.JoinHostPort("127.0.0.1", port)})
		nets = nil
	case mode.IsHost():
		return "", "", fmt.Errorf("hookd cannot reach %q for its probe: it uses the host's network, which hookd's container "+
			"does not (give hookd network_mode: host, or run it as a systemd service)", name)
	case mode.IsContainer():
		// It has the addresses of the container whose namespace it shares.
		owner, err := r.docker.ContainerInspect(ctx, mode.ConnectedContainer())
		if err != nil {
			return "", "", fmt.Errorf("inspect %s, whose network %q uses: %w", mode.ConnectedContainer(), name, err)
		}
		nets = nil
		if owner.NetworkSettings != nil {
			nets = owner.NetworkSettings.Networks
		}
	}
	for _, n := range sortedKeys(nets) {
		ep := nets[n]
		if ep == nil {
			continue
		}
		all = append(all, n)
		ip := ep.IPAddress
		if ip == "" {
			ip = ep.GlobalIPv6Address
		}
		if ip == "" || !onHost && !hookdNets[ep.NetworkID] {
			continue
		}
		cands = append(cands, candidate{n, net.JoinHostPort(ip, port)})
	}
	if len(cands) == 0 {
		if !onHost && len(all) > 0 {
			return "", "", fmt.Errorf("hookd cannot reach %q for its probe: hookd's container shares no network with it "+
				"(it is on %s); attach hookd to one of them (docker-compose.yml: add the network to hookd's networks:, "+
				"or docker network connect %s <hookd's container>)", name, strings.Join(all, ", "), all[0])
		}
		mode := "none"
		if c.HostConfig != nil && c.HostConfig.NetworkMode != "" {
			mode = string(c.HostConfig.NetworkMode)
		}
		return "", "", fmt.Errorf("hookd cannot reach %q for its probe: it has no network address (network_mode %s); "+
			"attach it to a network hookd can reach, or remove the %s label", name, mode, deploy.LabelProbe)
	}

	// Dial every candidate at once: an unreachable one costs a timeout.
	errs := make([]error, len(cands))
	done := make(chan int, len(cands))
	for i, cd := range cands {
		go func() {
			errs[i] = reach(ctx, cd.addr)
			done <- i
		}()
	}
	for range cands {
		<-done
	}
	for i, cd := range cands {
		if errs[i] == nil {
			return cd.addr, cd.network, nil
		}
	}
	if ctx.Err() != nil {
		return "", "", ctx.Err()
	}
	where := make([]string, len(cands))
	for i, cd := range cands {
		where[i] = fmt.Sprintf("%s on %s", cd.addr, cd.network)
	}
	fix := "hookd on the host reaches containers on bridge networks, not on macvlan, ipvlan or overlay ones: " +
		"attach " + strconv.Quote(name) + " to a bridge network too, or run hookd in a container on " + cands[0].network
	if !onHost {
		fix = "check that hookd's container is really attached to " + cands[0].network
	}
	return "", "", fmt.Errorf("hookd cannot reach %q for its probe at %s: %v; %s", name, strings.Join(where, ", "), errs[0], fix)
}

// reach reports whether a TCP connection to addr gets an answer.
func reach(ctx context.Context, addr string) error {
	d := net.Dialer{Timeout: reachTimeout}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err == nil {
		_ = c.Close()
		return nil
	}
	if errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) {
		return nil // the container's kernel answered: nothing listens yet
	}
	return err
}

// hookdNetworks returns the ids of the networks hookd's own container is
// attached to, or onHost when hookd shares the host's network (no
// container, or network_mode host).
func (r *Recreate) hookdNetworks(ctx context.Context) (ids map[string]bool, onHost bool, err error) {
	if r.cfg.SelfID == "" {
		return nil, true, nil
	}
	self, err := r.docker.ContainerInspect(ctx, r.cfg.SelfID)
	if err != nil {
		return nil, false, fmt.Errorf("inspect hookd's own container: %w", err)
	}
	if self.HostConfig != nil && self.HostConfig.NetworkMode.IsHost() {
		return nil, true, nil
	}
	ids = map[string]bool{}
	if self.NetworkSettings != nil {
		for _, ep := range self.NetworkSettings.Networks {
			if ep != nil && ep.NetworkID != "" {
				ids[ep.NetworkID] = true
			}
		}
	}
	return ids, false, nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// precheck runs, before anything is pulled, the checks that other
// strategies and the probe add to the recreate's own: the strategy's fit
// (a refusal) and the probe's labels and reach (a failure).
func (r *Recreate) precheck(ctx context.Context, cur containerInspect) (strategy.Outcome, bool) {
	if r.fit != nil {
		if err := r.fit(ctx, cur); err != nil {
			return strategy.Refused(err), true
		}
	}
	p, err := parseProbe(cur.Config.Labels)
	if err != nil {
		return strategy.Failed(fmt.Errorf("%w; nothing was changed", err)), true
	}
	if p != nil {
		if _, _, err := r.probeAddress(ctx, cur, p.port); err != nil {
			return strategy.Failed(fmt.Errorf("%w; nothing was changed", err)), true
		}
	}
	return strategy.Outcome{}, false
}

// runProbe probes the container id until p passed p.successes times in a
// row (a zero verdict), or timeout passed first (a verdict with the last
// probe's error). unreachable is set when hookd cannot reach the container
// at all; err when ctx ended.
func (r *Recreate) runProbe(ctx context.Context, id string, p *probe, timeout time.Duration) (v verdict, unreachable, err error) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	c, err := r.docker.ContainerInspect(ctx, id)
	if err != nil {
		if ctx.Err() != nil {
			return verdict{}, nil, ctx.Err()
		}
		return verdict{reason: deploy.ReasonUnhealthy, detail: fmt.Sprintf("probe %s: %v", p.label, err)}, nil, nil
	}
	addr, _, err := r.probeAddress(ctx, c, p.port)
	if err != nil {
		if ctx.Err() != nil {
			return verdict{}, nil, ctx.Err()
		}
		return verdict{}, err, nil
	}
	tick := time.NewTicker(p.interval)
	defer tick.Stop()
	passed := 0
	var last error
	for {
		err := p.try(ctx, addr)
		if ctx.Err() != nil {
			return verdict{}, nil, ctx.Err()
		}
		if err == nil {
			if passed++; passed >= p.successes {
				return verdict{}, nil, nil
			}
		} else {
			passed, last = 0, err
		}
		select {
		case <-tick.C:
		case <-deadline.C:
			detail := fmt.Sprintf("probe %s did not pass %d times in a row within %s", p.label, p.successes, timeout)
			if last != nil {
				detail += "; last: " + last.Error()
			}
			return verdict{reason: deploy.ReasonUnhealthy, detail: detail}, nil, nil
		case <-ctx.Done():
			return verdict{}, nil, ctx.Err()
		}
	}
}

// gateProbed is the recreate's health gate with the target's probe, if
// it has one, run next to it. A container hookd cannot reach fails the
// gate: the old one is back within the rollback.
func (r *Recreate) gateProbed(ctx context.Context, cur containerInspect, id string, msgs <-chan events.Message, errs <-chan error,
	subscribe func() (<-chan events.Message, <-chan error), hasHealth bool, timeout, settle time.Duration,
) (verdict, error) {
	p, _ := parseProbe(cur.Config.Labels) // checked before the swap began
	v, unreachable, err := r.gateAll(ctx, p, id, msgs, errs, subscribe, hasHealth, timeout, settle)
	if unreachable != nil {
		return verdict{reason: deploy.ReasonUnhealthy, detail: unreachable.Error()}, nil
	}
	return v, err
}

// gateAll runs the health gate (gate) and, when p is set, the probe side
// by side: both must pass; the first failure decides and stops the other.
// unreachable and err are as runProbe's.
func (r *Recreate) gateAll(ctx context.Context, p *probe, id string, msgs <-chan events.Message, errs <-chan error,
	subscribe func() (<-chan events.Message, <-chan error), hasHealth bool, timeout, settle time.Duration,
) (v verdict, unreachable, err error) {
	if p == nil {
		v, err := r.gate(ctx, id, msgs, errs, subscribe, hasHealth, timeout, settle)
		return v, nil, err
	}
	type result struct {
		v                verdict
		unreachable, err error
	}
	gctx, cancel := context.WithCancel(ctx)
	defer cancel()
	results := make(chan result, 2)
	go func() {
		v, err := r.gate(gctx, id, msgs, errs, subscribe, hasHealth, timeout, settle)
		results <- result{v: v, err: err}
	}()
	go func() {
		v, u, err := r.runProbe(gctx, id, p, timeout)
		results <- result{v, u, err}
	}()
	var first *result
	for range 2 {
		res := <-results
		if first == nil && (res.v.reason != "" || res.unreachable != nil || res.err != nil) {
			first = &res
			cancel() // the other one stops; it is waited for all the same
		}
	}
	if first != nil {
		if first.err != nil {
			return verdict{}, nil, first.err
		}
		return first.v, first.unreachable, nil
	}
	// Both passed; the container may have died since the gate's verdict.
	return r.confirm(ctx, id, hasHealth, timeout), nil, nil
}
