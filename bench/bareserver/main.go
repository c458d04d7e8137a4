// Command bareserver is the load-test server for POST /hooks/github.
//
// With -mode bare it is the ceiling: a bare net/http server that reads the
// body and checks the X-Hub-Signature-256 HMAC, nothing else. With -mode
// hookd it serves hookd's webhook handler (signature, parse, dedupe, submit
// to a queue that accepts everything, metrics, one log line per delivery)
// with the same server settings. It prints the address it listens on, then
// serves until interrupted. The secret comes from BENCH_SECRET.
package main

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"github.com/and3rn3t/hookd/internal/deploy"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/and3rn3t/hookd/internal/metrics"
	"github.com/and3rn3t/hookd/internal/webhook"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "bareserver:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bareserver", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "127.0.0.1:0", "listen address")
	mode := fs.String("mode", "bare", "bare (read body, check HMAC) or hookd (the webhook handler)")
	cpuprofile := fs.String("cpuprofile", "", "write a CPU profile of the whole run to this file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	secret := []byte(getenv("BENCH_SECRET"))
	if len(secret) == 0 {
		return errors.New("BENCH_SECRET is empty")
	}

	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}

	var h http.Handler
	switch *mode {
	case "bare":
		h = bare(secret)
	case "hookd":
		logger := slog.New(slog.NewTextHandler(stderr, nil)).With("component", "webhook")
		m := metrics.New(prometheus.NewRegistry(), metrics.BuildInfo{})
		wh, err := webhook.NewHandler(webhook.Config{Secrets: [][]byte{secret}},
			acceptAll{}, webhook.NewMemoryDeliveries(0), m, logger)
		if err != nil {
			return err
		}
		h = wh
	default:
		return fmt.Errorf("-mode %q: want bare or hookd", *mode)
	}
	mux := http.NewServeMux()
	mux.Handle("POST /hooks/github", h)

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, ln.Addr())
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       120 * time.Second,
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		return err
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// bare reads the body and checks its HMAC: the least any webhook
// receiver must do.
func bare(secret []byte) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
		if err != nil {
			w.WriteHeader(http.StatusRequestEntityTooLarge)
			return
		}
		got, err := hex.DecodeString(strings.TrimPrefix(r.Header.Get("X-Hub-Signature-256"), "sha256="))
		mac := hmac.New(sha256.New, secret)
		mac.Write(body)
		w.Header().Set("Content-Type", "application/json")
		if err != nil || !hmac.Equal(got, mac.Sum(nil)) {
			w.WriteHeader(http.StatusUnauthorized)
			io.WriteString(w, `{"error":"invalid signature"}`+"\n")
			return
		}
		w.WriteHeader(http.StatusAccepted)
		io.WriteString(w, `{"status":"queued"}`+"\n")
	})
}

// acceptAll is a deploy queue that takes every request at once.
type acceptAll struct{}

func (acceptAll) Submit(_ context.Context, req deploy.Request) ([]deploy.Job, error) {
	return []deploy.Job{{ID: "bench", Target: "www", Request: req, Status: deploy.StatusQueued}}, nil
}
