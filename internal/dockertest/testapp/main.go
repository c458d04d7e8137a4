// Command testapp is the program inside the dockertest images. It is built
// by the dockertest package for the engine's architecture and never shipped.
//
//	testapp serve   serve HTTP on :8080 (or :$TESTAPP_PORT)
//	testapp health  exit 0 when healthy, 1 otherwise (the image's healthcheck)
//
// TESTAPP_PORT moves both to another port, for containers that share a
// network namespace (network_mode host or container:NAME).
// Its behaviour is steered by files in the image, so that one binary serves
// every variant: /version (what GET / answers), /crash (exit 3 ~300ms after
// start), /slowstart (a Go duration: not ready before it has passed),
// /unhealthy (the healthcheck always fails) and /nodrain (on SIGTERM, exit
// at once instead of finishing the requests in flight).
// GET /sleep?d=DURATION answers like GET / after that long.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

const (
	crashDelay  = 300 * time.Millisecond
	crashCode   = 3
	maxFileBody = 1 << 20
)

// port is where serve listens and health asks.
func port() string {
	if p := os.Getenv("TESTAPP_PORT"); p != "" {
		return p
	}
	return "8080"
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cmd := "serve"
	if len(args) > 0 {
		cmd = args[0]
	}
	switch cmd {
	case "serve":
		if err := serve(ctx, stdout); err != nil {
			fmt.Fprintf(stderr, "testapp: %v\n", err)
			return 1
		}
		return 0
	case "health":
		if err := health(ctx); err != nil {
			fmt.Fprintf(stderr, "unhealthy: %v\n", err)
			return 1
		}
		fmt.Fprintln(stdout, "healthy")
		return 0
	default:
		fmt.Fprintf(stderr, "testapp: unknown command %q (want serve or health)\n", cmd)
		return 2
	}
}

func serve(ctx context.Context, stdout io.Writer) error {
	start := time.Now()
	version := readTrimmed("/version")

	var slow time.Duration
	if s := readTrimmed("/slowstart"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("parse /slowstart: %w", err)
		}
		slow = d
	}

	crash := make(<-chan time.Time)
	if exists("/crash") {
		crash = time.After(crashDelay)
	}

	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, version)
	})
	mux.HandleFunc("GET /sleep", func(w http.ResponseWriter, r *http.Request) {
		d, err := time.ParseDuration(r.URL.Query().Get("d"))
		if err != nil || d < 0 || d > time.Minute {
			http.Error(w, "want d=DURATION (at most 1m)", http.StatusBadRequest)
			return
		}
		select {
		case <-time.After(d):
		case <-r.Context().Done():
			return
		}
		fmt.Fprintln(w, version)
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		if time.Since(start) < slow {
			http.Error(w, "starting", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /env", func(w http.ResponseWriter, r *http.Request) {
		v, ok := os.LookupEnv(r.URL.Query().Get("name"))
		if !ok {
			http.Error(w, "unset", http.StatusNotFound)
			return
		}
		fmt.Fprintln(w, v)
	})
	mux.HandleFunc("GET /file", func(w http.ResponseWriter, r *http.Request) {
		b, err := os.ReadFile(filepath.Clean(r.URL.Query().Get("path")))
		if errors.Is(err, os.ErrNotExist) {
			http.Error(w, "not found", http.StatusNotFound)
			return
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		_, _ = w.Write(b)
	})
	mux.HandleFunc("PUT /file", func(w http.ResponseWriter, r *http.Request) {
		p := filepath.Clean(r.URL.Query().Get("path"))
		b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxFileBody))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})

	listenAddr := ":" + port()
	srv := &http.Server{Addr: listenAddr, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()
	fmt.Fprintf(stdout, "testapp %s serving on %s\n", version, listenAddr)

	select {
	case err := <-errc:
		return fmt.Errorf("listen: %w", err)
	case <-crash:
		fmt.Fprintln(stdout, "testapp crashing as configured")
		os.Exit(crashCode)
	case <-ctx.Done():
	}
	if exists("/nodrain") {
		fmt.Fprintln(stdout, "testapp stopping without draining, as configured")
		os.Exit(0)
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	fmt.Fprintln(stdout, "testapp stopped")
	return nil
}

func health(ctx context.Context) error {
	if exists("/unhealthy") {
		return errors.New("configured unhealthy")
	}
	ctx, cancel := context.WithTimeout(ctx, 900*time.Millisecond)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://127.0.0.1:"+port()+"/healthz", nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("healthz answered %d", resp.StatusCode)
	}
	return nil
}

func readTrimmed(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
