// Command burst checks that a delivery answered 202 survives kill -9.
//
//	burst -addr A -conns 16 -duration 3s -out FILE   post signed deliveries (each with a new
//	                                                  id) until the duration is up or hookd
//	                                                  stops answering; write every 202's
//	                                                  delivery id and job ids to FILE
//	burst -addr A -check FILE                         after a restart on the same state: every
//	                                                  job is there (GET /api/v1/jobs/{id},
//	                                                  $BENCH_TOKEN) and every delivery is
//	                                                  known (a redelivery is a duplicate)
//
// The body is -payload, signed with $BENCH_SECRET. Only loopback addresses.
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

func main() {
	if err := run(os.Args[1:], os.Getenv, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "burst:", err)
		os.Exit(1)
	}
}

func run(args []string, getenv func(string) string, stdout io.Writer) error {
	fs := flag.NewFlagSet("burst", flag.ContinueOnError)
	addr := fs.String("addr", "", "hookd's address (loopback host:port)")
	conns := fs.Int("conns", 16, "concurrent deliveries")
	duration := fs.Duration("duration", 3*time.Second, "longest burst")
	out := fs.String("out", "", "file for the 202 answers (burst)")
	check := fs.String("check", "", "file of 202 answers to check (after a restart)")
	payload := fs.String("payload", "internal/webhook/testdata/package.published.container.real.json", "delivery body")
	if err := fs.Parse(args); err != nil {
		return err
	}
	host, _, err := net.SplitHostPort(*addr)
	if ip := net.ParseIP(host); err != nil || ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("-addr %q: only a loopback address", *addr)
	}
	body, err := os.ReadFile(*payload)
	if err != nil {
		return err
	}
	secret := getenv("BENCH_SECRET")
	if secret == "" {
		return errors.New("BENCH_SECRET is empty")
	}
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write(body)
	d := deliverer{url: "http://" + *addr, body: body, sig: "sha256=" + hex.EncodeToString(mac.Sum(nil)),
		client: &http.Client{Timeout: 10 * time.Second}}
	if *check != "" {
		return d.check(*check, getenv("BENCH_TOKEN"), stdout)
	}
	if *out == "" || *duration > time.Minute || *conns < 1 || *conns > 256 {
		return errors.New("-out is required, -duration at most 1m, -conns 1..256")
	}
	return d.burst(*conns, *duration, *out, stdout)
}

type deliverer struct {
	url, sig string
	body     []byte
	client   *http.Client
}

type answer struct {
	Status     string   `json:"status"`
	DeliveryID string   `json:"delivery_id"`
	Jobs       []string `json:"jobs"`
}

func (d deliverer) deliver(id string) (int, answer, error) {
	req, _ := http.NewRequest(http.MethodPost, d.url+"/hooks/github", bytes.NewReader(d.body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-GitHub-Event", "package")
	req.Header.Set("X-GitHub-Delivery", id)
	req.Header.Set("X-Hub-Signature-256", d.sig)
	resp, err := d.client.Do(req)
	if err != nil {
		return 0, answer{}, err
	}
	defer resp.Body.Close()
	var a answer
	err = json.NewDecoder(resp.Body).Decode(&a)
	return resp.StatusCode, a, err
}

func (d deliverer) burst(conns int, duration time.Duration, out string, stdout io.Writer) error {
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	defer f.Close()
	var (
		mu       sync.Mutex
		accepted int
		failed   atomic.Int64
		others   atomic.Int64
	)
	ctx, cancel := context.WithTimeout(context.Background(), duration)
	defer cancel()
	run := time.Now().UnixNano()
	var wg sync.WaitGroup
	for w := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; ctx.Err() == nil; n++ {
				id := fmt.Sprintf("burst-%d-%d-%d", run, w, n)
				code, a, err := d.deliver(id)
				switch {
				case err != nil:
					if failed.Add(1) > 100 {
						cancel() // hookd is gone
					}
					time.Sleep(10 * time.Millisecond)
				case code == http.StatusAccepted && len(a.Jobs) > 0:
					mu.Lock()
					fmt.Fprintf(f, "%s %s\n", id, strings.Join(a.Jobs, ","))
					accepted++
					mu.Unlock()
				default:
					others.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	fmt.Fprintf(stdout, "burst: %d deliveries answered 202 with a job, %d other answers, %d without answer\n", accepted, others.Load(), failed.Load())
	return nil
}

func (d deliverer) check(in, token string, stdout io.Writer) error {
	f, err := os.Open(in)
	if err != nil {
		return err
	}
	defer f.Close()
	jobs := map[string]bool{}
	var ids []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		id, js, _ := strings.Cut(sc.Text(), " ")
		ids = append(ids, id)
		for _, j := range strings.Split(js, ",") {
			jobs[j] = true
		}
	}
	var missing []string
	for j := range jobs {
		req, _ := http.NewRequest(http.MethodGet, d.url+"/api/v1/jobs/"+j, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := d.client.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			missing = append(missing, fmt.Sprintf("job %s: %d", j, resp.StatusCode))
		}
	}
	for _, id := range ids {
		code, a, err := d.deliver(id)
		if err != nil {
			return err
		}
		if code != http.StatusOK || a.Status != "duplicate" {
			missing = append(missing, fmt.Sprintf("delivery %s: redelivery answered %d %s", id, code, a.Status))
		}
	}
	fmt.Fprintf(stdout, "after kill -9 and restart: %d deliveries answered 202 (%d distinct jobs): %d jobs or deliveries missing\n",
		len(ids), len(jobs), len(missing))
	if len(missing) > 0 {
		return fmt.Errorf("lost after a 202: %s", strings.Join(missing[:min(len(missing), 10)], "; "))
	}
	return nil
}
