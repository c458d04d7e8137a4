package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/and3rn3t/hookd/internal/dockertest"
)

// TestDeliveriesThatQueueNothingWriteNothing: pings, deliveries for images
// no target follows, other events and forged deliveries leave the state
// file as it was, byte for byte: on an SD card every write is a sync.
func TestDeliveriesThatQueueNothingWriteNothing(t *testing.T) {
	ctx := context.Background()
	state := t.TempDir()
	d := startDaemon(ctx, t, map[string]string{"DOCKER_HOST": noDocker, "HOOKD_STATE_DIR": state})
	db := filepath.Join(state, "hookd.db")
	snapshot := func() string {
		data, err := os.ReadFile(db)
		if err != nil {
			t.Fatal(err)
		}
		fi, err := os.Stat(db)
		if err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf("%x %s", sha256.Sum256(data), fi.ModTime())
	}
	before := snapshot()

	ping, err := os.ReadFile(filepath.Join("..", "..", "internal", "webhook", "testdata", "ping.json"))
	if err != nil {
		t.Fatal(err)
	}
	if code, out := d.deliver(t, "ping", "ping-quiet", ping); code != http.StatusOK {
		t.Errorf("ping answered %d %v, want 200", code, out)
	}
	body := packageEvent(t, "ghcr.io", "nobody", "nothing", "latest", "sha256:"+strings.Repeat("b", 64))
	for i := range 20 {
		if code, out := d.deliver(t, "package", fmt.Sprintf("quiet-%d", i), body); code != http.StatusAccepted || out["status"] != "ignored" {
			t.Errorf("delivery for an image no target follows answered %d %v, want 202 ignored", code, out)
		}
	}
	if code, out := d.deliver(t, "issues", "quiet-other", []byte(`{}`)); code != http.StatusAccepted {
		t.Errorf("other event answered %d %v, want 202", code, out)
	}
	resp, err := http.Post(d.url+"/hooks/github", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("unsigned delivery answered %d, want 401", resp.StatusCode)
	}
	if after := snapshot(); after != before {
		t.Errorf("state file changed (sha256, mtime) from %s to %s; want no write", before, after)
	}
}

// TestFloodOfStrangers attacks the real hookd binary with 500 connections
// that reconnect as soon as they are closed, posting 1 MiB bodies with a
// forged signature (announced or chunked) or sending headers or a body a
// trickle at a time, for 15 s (bench/flood, built here). Meanwhile a new
// /healthz request and a correctly signed delivery must be answered, and
// hookd's peak private memory (RssAnon, what the host pays; VmHWM also
// counts the binary's pages mapped from the page cache) must stay bounded.
// The targets, 40 MiB and 1 s over 60 s, are bench/run.sh's to check; the
// bound on answers here is looser (3 s), for a shorter run on a machine
// shared with the rest of the suite. Before the caps, 15 s of this took
// hookd past 140 MiB; with them and the soft memory limit it peaks at about
// 21 MiB.
func TestFloodOfStrangers(t *testing.T) {
	if testing.Short() {
		t.Skip("a 15 s flood")
	}
	dir := t.TempDir()
	build := func(pkg, out string) string {
		t.Helper()
		bin := filepath.Join(dir, out)
		cmd := exec.Command("go", "build", "-o", bin, pkg)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", pkg, err, out)
		}
		return bin
	}
	hookd := build(".", "hookd")
	flood := build("../../bench/flood", "flood")

	addr := freeAddr(t)
	cmd := exec.Command(hookd)
	cmd.Env = []string{
		"HOOKD_LISTEN=" + addr,
		"HOOKD_STATE_DIR=" + filepath.Join(dir, "state"),
		"HOOKD_WEBHOOK_SECRET=" + testSecret,
		"HOOKD_POLL_INTERVAL=0",
		"HOOKD_LOG_LEVEL=error",
		"HOOKD_LABEL_FILTER=" + dockertest.LabelKey + "=" + dockertest.LabelValue(t),
		"DOCKER_HOST=" + noDocker,
	}
	logs := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("hookd log:\n%s", logs.String())
		}
	})
	dockertest.WaitFor(t, 20*time.Second, "/healthz", func() (bool, string) {
		return answers("http://"+addr+"/healthz", http.StatusOK)
	})

	attack := exec.Command(flood, "-addr", addr, "-pid", strconv.Itoa(cmd.Process.Pid),
		"-conns", "500", "-duration", "15s", "-probe", "500ms",
		"-payload", filepath.Join("..", "..", "internal", "webhook", "testdata", "package.published.container.real.json"))
	attack.Env = append(os.Environ(), "BENCH_SECRET="+testSecret)
	out, err := attack.CombinedOutput()
	t.Logf("flood:\n%s", out)
	if err != nil {
		t.Fatalf("flood: %v", err)
	}
	m := regexp.MustCompile(`RESULT anon_peak_kib=(\d+) hwm_kib=(\d+) healthz_max_ms=(\d+) healthz_failed=(\d+) delivery_max_ms=(\d+) delivery_failed=(\d+) probes=(\d+)`).FindSubmatch(out)
	if m == nil {
		t.Fatal("flood printed no RESULT line")
	}
	n := func(i int) int { v, _ := strconv.Atoi(string(m[i])); return v }
	if anon := n(1); anon == 0 || anon > 40*1024 {
		t.Errorf("hookd's peak private memory (RssAnon) = %.1f MiB, want under 40 MiB", float64(anon)/1024)
	}
	if n(7) < 5 {
		t.Errorf("%d probes answered during the flood, want at least 5", n(7))
	}
	const bound = 3000 // ms
	if n(4) > 0 || n(3) > bound {
		t.Errorf("/healthz during the flood: slowest %d ms, %d not answered; want all within %d ms", n(3), n(4), bound)
	}
	if n(6) > 0 || n(5) > bound {
		t.Errorf("signed delivery during the flood: slowest %d ms, %d not answered; want all within %d ms", n(5), n(6), bound)
	}
	if !regexp.MustCompile(`signed delivery .*answers map\[202:\d+\]`).Match(out) {
		t.Errorf("signed deliveries during the flood were not all answered 202")
	}
}
