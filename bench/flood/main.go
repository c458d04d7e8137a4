// Command flood attacks a hookd on this machine the way an unauthenticated
// stranger can, and measures what hookd pays and whether it still serves.
//
// -conns attacker connections run for -duration, each reconnecting as soon
// as its connection is closed. They rotate through four kinds: "length"
// posts a -body-byte body announced by Content-Length with a forged
// signature, "chunked" the same without a length (so it must be read to be
// refused), "slowbody" announces a small body and trickles it, and
// "slowheaders" trickles its request headers. Meanwhile, every -probe, a new
// connection asks GET /healthz and another posts a correctly signed delivery
// (-payload, signed with $BENCH_SECRET); their latencies are reported, and
// hookd's peak private memory (RssAnon, sampled every 50 ms: what the host
// pays) and peak resident memory (VmHWM, which also counts the pages of the
// binary mapped from the page cache) of process -pid.
//
// It only ever connects to a loopback address and stops by itself.
package main

import (
	"bufio"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "flood:", err)
		os.Exit(1)
	}
}

var kinds = []string{"length", "chunked", "slowbody", "slowheaders"}

func run(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	fs := flag.NewFlagSet("flood", flag.ContinueOnError)
	addr := fs.String("addr", "", "hookd's address (a loopback host:port)")
	pid := fs.Int("pid", 0, "hookd's process id, for its peak memory")
	conns := fs.Int("conns", 500, "attacker connections")
	duration := fs.Duration("duration", 60*time.Second, "how long to attack")
	bodySize := fs.Int("body", 1<<20, "bytes of each forged body")
	only := fs.String("kinds", strings.Join(kinds, ","), "attacks to rotate through")
	probeEvery := fs.Duration("probe", 250*time.Millisecond, "interval between probes")
	payload := fs.String("payload", "internal/webhook/testdata/package.published.container.real.json", "the signed delivery's body")
	attacker := fs.Bool("attacker", false, "be the attackers only (the process the prober starts)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	host, _, err := net.SplitHostPort(*addr)
	if ip := net.ParseIP(host); err != nil || ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("-addr %q: only a loopback address may be attacked", *addr)
	}
	if *conns < 1 || *conns > 5000 || *duration <= 0 || *duration > 10*time.Minute {
		return errors.New("-conns must be 1..5000 and -duration at most 10m")
	}
	secret := getenv("BENCH_SECRET")
	if secret == "" {
		return errors.New("BENCH_SECRET is empty")
	}
	signed, err := os.ReadFile(*payload)
	if err != nil {
		return err
	}
	use := strings.Split(*only, ",")
	for _, k := range use {
		if !slices.Contains(kinds, k) {
			return fmt.Errorf("-kinds: unknown attack %q", k)
		}
	}

	ctx, cancel := context.WithTimeout(ctx, *duration)
	defer cancel()
	if *attacker {
		a := &attack{addr: *addr, body: make([]byte, *bodySize)}
		for i := range a.body {
			a.body[i] = 'x'
		}
		var wg sync.WaitGroup
		for i := range *conns {
			wg.Add(1)
			go func() {
				defer wg.Done()
				a.loop(ctx, i, use[i%len(use)])
			}()
		}
		wg.Wait()
		fmt.Fprintf(stdout, "attack: %d connections for %s (%s), %d requests sent, %d answered\n",
			*conns, *duration, strings.Join(use, ","), a.sent.Load(), a.answered.Load())
		for _, kind := range use {
			fmt.Fprintf(stdout, "  %-12s answers %s\n", kind, a.statuses(kind))
		}
		return nil
	}

	// The attackers run in a process of their own, as they would on other
	// hosts: sharing this one's scheduler with a thousand busy goroutines,
	// the probes would measure their own wait for a turn.
	self, err := os.Executable()
	if err != nil {
		return err
	}
	var attackOut strings.Builder
	child := exec.CommandContext(context.WithoutCancel(ctx), self, append(slices.Clone(args), "-attacker")...)
	child.Stdout, child.Stderr = &attackOut, &attackOut
	if err := child.Start(); err != nil {
		return err
	}

	p := &prober{addr: *addr, secret: []byte(secret), payload: signed}
	hwm := procKiB(*pid, "VmHWM")
	anon := peakOf(*pid, "RssAnon", 50*time.Millisecond)
	tick := time.NewTicker(*probeEvery)
	defer tick.Stop()
	start := time.Now()
probing:
	for n := 0; ; n++ {
		select {
		case <-ctx.Done():
			break probing
		case <-tick.C:
		}
		if time.Since(start) < time.Second {
			continue // let the attack reach its stride
		}
		p.probe(ctx, n)
		if h := procKiB(*pid, "VmHWM"); h > hwm {
			hwm = h
		}
	}
	if err := child.Wait(); err != nil {
		return fmt.Errorf("attackers: %v\n%s", err, attackOut.String())
	}
	if h := procKiB(*pid, "VmHWM"); h > hwm {
		hwm = h
	}
	anonKiB := anon()
	io.WriteString(stdout, attackOut.String())
	healthz, delivery := p.summary()
	fmt.Fprintf(stdout, "probes: /healthz %s\n", healthz)
	fmt.Fprintf(stdout, "probes: signed delivery %s\n", delivery)
	fmt.Fprintf(stdout, "memory: hookd's peak private memory (RssAnon) %.1f MiB, peak resident (VmHWM, with the binary's mapped pages) %.1f MiB\n",
		float64(anonKiB)/1024, float64(hwm)/1024)
	fmt.Fprintf(stdout, "RESULT anon_peak_kib=%d hwm_kib=%d healthz_max_ms=%.0f healthz_failed=%d delivery_max_ms=%.0f delivery_failed=%d probes=%d\n",
		anonKiB, hwm, ms(p.healthz.max()), p.healthz.failed, ms(p.delivery.max()), p.delivery.failed, len(p.healthz.took))
	return nil
}

// attack is the attackers' shared state.
type attack struct {
	addr     string
	body     []byte
	sent     atomic.Int64
	answered atomic.Int64
	mu       sync.Mutex
	status   map[string]map[string]int // kind → answer → count
}

func (a *attack) count(kind, answer string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.status == nil {
		a.status = map[string]map[string]int{}
	}
	if a.status[kind] == nil {
		a.status[kind] = map[string]int{}
	}
	a.status[kind][answer]++
}

func (a *attack) statuses(kind string) string {
	a.mu.Lock()
	defer a.mu.Unlock()
	var parts []string
	for k, n := range a.status[kind] {
		parts = append(parts, fmt.Sprintf("%s×%d", k, n))
	}
	slices.Sort(parts)
	return strings.Join(parts, " ")
}

// loop attacks with one connection at a time until ctx is done.
func (a *attack) loop(ctx context.Context, id int, kind string) {
	for n := 0; ctx.Err() == nil; n++ {
		answer := a.once(ctx, id, fmt.Sprintf("flood-%d-%d", id, n), kind)
		a.count(kind, answer)
		if answer == "dial error" {
			// The listener's backlog is full: do not spin.
			select {
			case <-ctx.Done():
			case <-time.After(10 * time.Millisecond):
			}
		}
	}
}

// once makes one attack on a new connection and returns how it ended.
func (a *attack) once(ctx context.Context, id int, delivery, kind string) string {
	// The attackers come from other loopback addresses than the probes
	// (127.0.0.2-9), as strangers come from other hosts than GitHub: with
	// one address for all, the attackers' thousands of connections a
	// second would reuse ports whose last connection the server has not
	// closed yet, and the kernel would make new connections, probes
	// included, wait a second for a retried handshake.
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(2+id%8))}}
	c, err := d.DialContext(ctx, "tcp", a.addr)
	if err != nil {
		if ctx.Err() != nil {
			return "stopped"
		}
		return "dial error"
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	a.sent.Add(1)

	head := "POST /hooks/github HTTP/1.1\r\nHost: " + a.addr + "\r\nUser-Agent: flood\r\n" +
		"Content-Type: application/json\r\nX-GitHub-Event: package\r\nX-GitHub-Delivery: " + delivery + "\r\n" +
		"X-Hub-Signature-256: sha256=" + strings.Repeat("0", 64) + "\r\n"
	switch kind {
	case "length":
		go a.write(c, head+"Content-Length: "+strconv.Itoa(len(a.body))+"\r\n\r\n", a.body, 0)
	case "chunked":
		go a.write(c, head+"Transfer-Encoding: chunked\r\n\r\n", chunked(a.body), 0)
	case "slowbody":
		go a.write(c, head+"Content-Length: 20000\r\n\r\n", a.body[:20000], 100*time.Millisecond)
	case "slowheaders":
		go a.write(c, "", []byte(head+"X-Padding: "+strings.Repeat("p", 4000)+"\r\n\r\n"), 100*time.Millisecond)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		if ctx.Err() != nil {
			return "stopped"
		}
		return "closed without answer"
	}
	resp.Body.Close()
	a.answered.Add(1)
	return strconv.Itoa(resp.StatusCode)
}

// write sends head, then body; with a pause, 100 bytes per pause.
func (a *attack) write(c net.Conn, head string, body []byte, pause time.Duration) {
	if _, err := io.WriteString(c, head); err != nil {
		return
	}
	if pause == 0 {
		c.Write(body)
		return
	}
	for len(body) > 0 {
		n := min(100, len(body))
		if _, err := c.Write(body[:n]); err != nil {
			return
		}
		body = body[n:]
		time.Sleep(pause)
	}
}

func chunked(body []byte) []byte {
	var out []byte
	for len(body) > 0 {
		n := min(8192, len(body))
		out = fmt.Appendf(out, "%x\r\n", n)
		out = append(append(out, body[:n]...), "\r\n"...)
		body = body[n:]
	}
	return append(out, "0\r\n\r\n"...)
}

// prober asks what a legitimate client would, on new connections.
type prober struct {
	addr              string
	secret, payload   []byte
	healthz, delivery latencies
}

type latencies struct {
	took    []time.Duration
	connect []time.Duration // of took, how long the connection took
	failed  int
	codes   map[int]int
	errs    []string
}

func (l *latencies) add(d, connect time.Duration, code int, err error) {
	if l.codes == nil {
		l.codes = map[int]int{}
	}
	l.connect = append(l.connect, connect)
	if err != nil {
		l.failed++
		l.errs = append(l.errs, err.Error())
		d = 10 * time.Second
	} else {
		l.codes[code]++
	}
	l.took = append(l.took, d)
}

func (l *latencies) max() time.Duration {
	if len(l.took) == 0 {
		return 0
	}
	return slices.Max(l.took)
}

func (l *latencies) String() string {
	if len(l.took) == 0 {
		return "none"
	}
	s := slices.Clone(l.took)
	slices.Sort(s)
	c := slices.Clone(l.connect)
	slices.Sort(c)
	out := fmt.Sprintf("%d probes, median %.1f ms, p99 %.1f ms, max %.1f ms (connecting: median %.1f ms, max %.1f ms), answers %v, no answer %d",
		len(s), ms(s[len(s)/2]), ms(s[len(s)*99/100]), ms(s[len(s)-1]), ms(c[len(c)/2]), ms(c[len(c)-1]), l.codes, l.failed)
	if len(l.errs) > 0 {
		out += " (" + strings.Join(l.errs, "; ") + ")"
	}
	return out
}

func (p *prober) summary() (string, string) { return p.healthz.String(), p.delivery.String() }

func (p *prober) probe(ctx context.Context, n int) {
	client := &http.Client{
		Timeout:   10 * time.Second,
		Transport: &http.Transport{DisableKeepAlives: true},
	}
	start := time.Now()
	code, connect, err := do(ctx, client, "GET", "http://"+p.addr+"/healthz", nil, nil)
	p.healthz.add(time.Since(start), connect, code, err)

	mac := hmac.New(sha256.New, p.secret)
	mac.Write(p.payload)
	h := http.Header{}
	h.Set("Content-Type", "application/json")
	h.Set("X-GitHub-Event", "package")
	h.Set("X-GitHub-Delivery", fmt.Sprintf("probe-%d-%d", time.Now().UnixNano(), n))
	h.Set("X-Hub-Signature-256", "sha256="+hex.EncodeToString(mac.Sum(nil)))
	start = time.Now()
	code, connect, err = do(ctx, client, "POST", "http://"+p.addr+"/hooks/github", h, p.payload)
	p.delivery.add(time.Since(start), connect, code, err)
}

// do makes one request and returns its status and how long connecting took.
func do(ctx context.Context, client *http.Client, method, url string, h http.Header, body []byte) (int, time.Duration, error) {
	var connect time.Duration
	start := time.Now()
	trace := &httptrace.ClientTrace{ConnectDone: func(string, string, error) { connect = time.Since(start) }}
	req, err := http.NewRequestWithContext(httptrace.WithClientTrace(context.WithoutCancel(ctx), trace), method, url, strings.NewReader(string(body)))
	if err != nil {
		return 0, 0, err
	}
	if h != nil {
		req.Header = h
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, connect, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, connect, nil
}

// peakOf samples field of pid's /proc status every step until the
// returned function is called, which returns the largest value seen, in KiB.
func peakOf(pid int, field string, step time.Duration) func() int64 {
	var peak atomic.Int64
	peak.Store(procKiB(pid, field))
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		t := time.NewTicker(step)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
			}
			if v := procKiB(pid, field); v > peak.Load() {
				peak.Store(v)
			}
		}
	}()
	return func() int64 {
		close(done)
		<-stopped
		if v := procKiB(pid, field); v > peak.Load() {
			peak.Store(v)
		}
		return peak.Load()
	}
}

// procKiB returns field (VmHWM, RssAnon, …) of pid's /proc status in KiB
// (0 if unknown).
func procKiB(pid int, field string) int64 {
	if pid <= 0 {
		return 0
	}
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n
		}
	}
	return 0
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
