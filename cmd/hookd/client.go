package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/and3rn3t/hookd/internal/api"
	"github.com/and3rn3t/hookd/internal/deploy"
)

var (
	// errUsage marks a mistake in how hookd was invoked or configured; main
	// exits 2 for it.
	errUsage = errors.New("usage")
	// errDeployFailed means a deploy ended failed or rolled back.
	errDeployFailed = errors.New("deploy failed")
)

const (
	defaultClientURL = "http://127.0.0.1:8080"
	// clientSlack is added to --timeout for the HTTP round trip of a wait.
	clientSlack    = 30 * time.Second
	clientDeadline = 30 * time.Second // for everything else
)

// runClient implements the client verbs "deploy" and "status"; args are the words after the verb.
func runClient(ctx context.Context, verb string, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	switch verb {
	case "deploy":
		return clientDeploy(ctx, args, getenv, stdout, stderr)
	case "status":
		return clientStatus(ctx, args, getenv, stdout, stderr)
	default:
		return fmt.Errorf("%w: unknown command %q (commands: deploy, status)", errUsage, verb)
	}
}

// clientFlags are the flags every client verb has.
type clientFlags struct {
	url       string
	tokenFile string
}

func newClientFlagSet(verb, synopsis string, stderr io.Writer) (*flag.FlagSet, *clientFlags) {
	fs := flag.NewFlagSet("hookd "+verb, flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cf clientFlags
	fs.StringVar(&cf.url, "url", "", "hookd's address (env HOOKD_URL, default "+defaultClientURL+")")
	fs.StringVar(&cf.tokenFile, "token-file", "", "file holding the API token (env HOOKD_API_TOKEN or HOOKD_API_TOKEN_FILE)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: %s\n\n", synopsis)
		fs.PrintDefaults()
	}
	return fs, &cf
}

// parseArgs parses flags placed before, between or after the positional
// arguments ("hookd deploy web --wait"), which flag.Parse alone does not.
func parseArgs(fs *flag.FlagSet, args []string) ([]string, error) {
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, fmt.Errorf("%w: %v", errUsage, err)
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return positional, nil
		}
		if len(args) > len(rest) && args[len(args)-len(rest)-1] == "--" {
			return append(positional, rest...), nil
		}
		positional = append(positional, rest[0])
		args = rest[1:]
	}
}

// deployArgs is what "hookd deploy" was asked.
type deployArgs struct {
	client  *clientFlags
	req     api.DeployRequest
	timeout time.Duration // of the wait
}

func parseDeploy(args []string, stderr io.Writer) (deployArgs, error) {
	fs, cf := newClientFlagSet("deploy", "hookd deploy [TARGET] [--image REF] [--force] [--wait [--timeout 5m]]", stderr)
	image := fs.String("image", "", "deploy the targets that follow this image (ghcr.io/owner/name:tag) instead of one target")
	force := fs.Bool("force", false, "recreate even when the target already runs the newest image")
	wait := fs.Bool("wait", false, "wait for the deploys to finish and exit non-zero if one failed or was rolled back (a refused deploy exits non-zero with or without --wait)")
	timeout := fs.Duration("timeout", 5*time.Minute, "how long --wait waits")
	positional, err := parseArgs(fs, args)
	if err != nil {
		return deployArgs{}, err
	}
	var target string
	switch {
	case len(positional) > 1:
		return deployArgs{}, fmt.Errorf("%w: hookd deploy takes at most one target, got %q", errUsage, positional)
	case len(positional) == 1:
		target = positional[0]
	}
	if target != "" && *image != "" {
		return deployArgs{}, fmt.Errorf("%w: give a target or --image, not both", errUsage)
	}
	if *wait && *timeout <= 0 {
		return deployArgs{}, fmt.Errorf("%w: --timeout must be positive", errUsage)
	}
	a := deployArgs{client: cf, req: api.DeployRequest{Target: target, Image: *image, Force: *force, Wait: *wait}}
	if *wait {
		a.req.Timeout, a.timeout = timeout.String(), *timeout
	}
	return a, nil
}

func clientDeploy(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	a, err := parseDeploy(args, stderr)
	if err != nil {
		return err
	}
	c, err := newAPIClient(a.client, getenv)
	if err != nil {
		return err
	}
	deadline := clientDeadline
	if a.req.Wait {
		deadline = a.timeout + clientSlack
	}
	ctx, cancel := context.WithTimeout(ctx, deadline)
	defer cancel()
	jobs, err := c.Deploy(ctx, a.req)
	return reportDeploy(stdout, jobs, err, a)
}

// reportDeploy prints what a deploy answered and returns the verb's result:
// errDeployFailed when a job failed, was rolled back or refused, and when a wait
// ended before the jobs did, where they stand.
func reportDeploy(w io.Writer, jobs []api.Job, err error, a deployArgs) error {
	var ae *api.Error
	if errors.As(err, &ae) && len(ae.Response.Jobs) > 0 {
		printDeployJobs(w, ae.Response.Jobs, true)
		if ae.Status == http.StatusGatewayTimeout {
			return fmt.Errorf("deploy still running after %s; see hookd status", a.timeout)
		}
		return err // it says why the wait ended
	}
	if err != nil {
		return err
	}
	printDeployJobs(w, jobs, a.req.Wait)
	return deployOutcome(jobs)
}

// printDeployJobs prints one line per job and, once they are final, what
// went wrong.
func printDeployJobs(w io.Writer, jobs []api.Job, final bool) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	if final {
		fmt.Fprintln(tw, "TARGET\tSTATUS\tDURATION\tJOB")
	} else {
		fmt.Fprintln(tw, "TARGET\tSTATUS\tJOB")
	}
	for _, j := range jobs {
		if final {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", j.Target, j.Status, jobDuration(j), j.ID)
		} else {
			fmt.Fprintf(tw, "%s\t%s\t%s\n", j.Target, j.Status, j.ID)
		}
	}
	tw.Flush()
	for _, j := range jobs {
		if p := jobProblem(j); p != "" {
			fmt.Fprintf(w, "%s: %s\n", j.Target, p)
		}
		for _, n := range j.Notes {
			fmt.Fprintf(w, "%s: %s\n", j.Target, n)
		}
	}
	printFailedVersions(w, jobs)
}

// printFailedVersions prints, for each job whose new version failed its
// gate, what is kept of it: hookd removed its container.
func printFailedVersions(w io.Writer, jobs []api.Job) {
	for _, j := range jobs {
		f := j.Failed
		if f == nil {
			continue
		}
		name := f.Container
		if name == "" {
			name = j.Target
		}
		head := fmt.Sprintf("\nfailed version of %s (job %s, %s)", name, j.ID, orDash(shortDigest(j.DigestAfter)))
		if f.ExitCode != nil {
			head += fmt.Sprintf(": exit code %d", *f.ExitCode)
		}
		fmt.Fprintln(w, head)
		if f.Health != "" {
			fmt.Fprintf(w, "  last health check: %s\n", oneLine(f.Health, 200))
		}
		if len(f.Logs) > 0 {
			fmt.Fprintln(w, "  last log lines:")
			for _, l := range f.Logs {
				fmt.Fprintf(w, "    %s\n", l)
			}
		}
	}
}

// deployOutcome returns an error wrapping errDeployFailed when a job failed,
// was rolled back or was refused (a refusal is final at once, waiting or not).
func deployOutcome(jobs []api.Job) error {
	var bad []string
	for _, j := range jobs {
		if j.Status == deploy.StatusFailed || j.Status == deploy.StatusRolledBack || j.Status == deploy.StatusRefused {
			bad = append(bad, j.Target+" "+string(j.Status))
		}
	}
	if len(bad) == 0 {
		return nil
	}
	return fmt.Errorf("%s: %w", strings.Join(bad, ", "), errDeployFailed)
}

func clientStatus(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs, cf := newClientFlagSet("status", "hookd status [--json] [--limit 20]", stderr)
	asJSON := fs.Bool("json", false, "print JSON instead of tables")
	limit := fs.Int("limit", 20, "how many recent jobs to show (1-1000)")
	positional, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(positional) > 0 {
		return fmt.Errorf("%w: hookd status takes no arguments, got %q", errUsage, positional)
	}
	if *limit < 1 || *limit > 1000 {
		return fmt.Errorf("%w: --limit must be from 1 to 1000", errUsage)
	}
	c, err := newAPIClient(cf, getenv)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, clientDeadline)
	defer cancel()
	targets, err := c.Targets(ctx)
	if err != nil {
		return err
	}
	jobs, err := c.Jobs(ctx, *limit)
	if err != nil {
		return err
	}
	if *asJSON {
		return printStatusJSON(stdout, targets, jobs)
	}
	now := time.Now()
	printTargets(stdout, targets, now)
	fmt.Fprintln(stdout)
	printJobs(stdout, jobs, now)
	return nil
}

func printStatusJSON(w io.Writer, targets []api.Target, jobs []api.Job) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(struct {
		Targets []api.Target `json:"targets"`
		Jobs    []api.Job    `json:"jobs"`
	}{nonNil(targets), nonNil(jobs)})
}

func printTargets(w io.Writer, targets []api.Target, now time.Time) {
	if len(targets) == 0 {
		fmt.Fprintln(w, "no targets: no container is labelled hookd.enable=true")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tIMAGE\tTAG\tDIGEST\tLAST-JOB\tNEXT-POLL")
	for _, t := range targets {
		last := "-"
		if t.LastJob != nil {
			last = string(t.LastJob.Status) + " " + t.LastJob.ID
		}
		next := "-"
		if !t.NextPoll.IsZero() {
			next = "due"
			if d := t.NextPoll.Sub(now); d > 0 {
				next = "in " + shortDuration(d)
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", t.Name, t.Image, t.Tag, orDash(shortDigest(t.Digest)), last, next)
	}
	tw.Flush()
}

func printJobs(w io.Writer, jobs []api.Job, now time.Time) {
	if len(jobs) == 0 {
		fmt.Fprintln(w, "no jobs yet")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tTARGET\tTRIGGER\tSTATUS\tAGE\tERROR")
	for _, j := range jobs {
		age := "-"
		if !j.CreatedAt.IsZero() {
			age = shortDuration(now.Sub(j.CreatedAt))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", j.ID, j.Target, orDash(string(j.Trigger)), j.Status, age, orDash(oneLine(jobProblem(j), 80)))
	}
	tw.Flush()
	// What gates and hooks recorded (a verified signature, a hook's
	// output, the job a superseded one was folded into), under the table.
	noted := false
	for _, j := range jobs {
		for _, n := range j.Notes {
			if !noted {
				fmt.Fprintln(w, "\nnotes:")
				noted = true
			}
			fmt.Fprintf(w, "  %s %s: %s\n", j.ID, j.Target, oneLine(n, 200))
		}
	}
	printFailedVersions(w, jobs)
}

// jobProblem says what went wrong in a job, or "".
func jobProblem(j api.Job) string {
	var parts []string
	if j.RollbackReason != "" {
		s := "rolled back: " + j.RollbackReason
		if j.RollbackDetail != "" {
			s += ": " + j.RollbackDetail
		}
		parts = append(parts, s)
	}
	if j.Error != "" {
		parts = append(parts, j.Error)
	}
	return strings.Join(parts, "; ")
}

func jobDuration(j api.Job) string {
	if j.DurationSeconds <= 0 {
		return "-"
	}
	return time.Duration(j.DurationSeconds * float64(time.Second)).Round(100 * time.Millisecond).String()
}

// shortDuration formats d coarsely: 42s, 3m10s, 5h2m, 3d.
func shortDuration(d time.Duration) string {
	switch {
	case d < 0:
		return "0s"
	case d < time.Hour:
		return d.Round(time.Second).String()
	case d < 48*time.Hour:
		return strings.TrimSuffix(d.Round(time.Minute).String(), "0s")
	default:
		return strconv.Itoa(int(d.Hours()/24)) + "d"
	}
}

// shortDigest returns the first 12 hex digits of a digest, as docker does.
func shortDigest(d string) string {
	_, hex, ok := strings.Cut(d, ":")
	if !ok {
		hex = d
	}
	if len(hex) > 12 {
		hex = hex[:12]
	}
	return hex
}

func oneLine(s string, max int) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > max {
		s = string(r[:max-1]) + "…"
	}
	return s
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// newAPIClient returns the client of the hookd the flags and the
// environment name.
func newAPIClient(cf *clientFlags, getenv func(string) string) (*api.Client, error) {
	url, token, err := clientSettings(cf, getenv)
	if err != nil {
		return nil, err
	}
	c, err := api.NewClient(url, token)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errUsage, err)
	}
	return c, nil
}

// clientSettings returns hookd's URL (--url, else HOOKD_URL, else
// defaultClientURL) and the API token (see clientToken).
func clientSettings(cf *clientFlags, getenv func(string) string) (url, token string, err error) {
	url = cf.url
	if url == "" {
		url = getenv("HOOKD_URL")
	}
	if url == "" {
		url = defaultClientURL
	}
	token, err = clientToken(cf.tokenFile, getenv)
	return url, token, err
}

// clientToken finds the API token: --token-file, else HOOKD_API_TOKEN, else
// HOOKD_API_TOKEN_FILE. Of several tokens (rotation) the first is used.
// Errors name the source, never the token.
func clientToken(flagFile string, getenv func(string) string) (string, error) {
	env, envFile := getenv("HOOKD_API_TOKEN"), getenv("HOOKD_API_TOKEN_FILE")
	var list, source string
	switch {
	case flagFile != "":
		source = "--token-file " + flagFile
		data, err := os.ReadFile(flagFile)
		if err != nil {
			return "", fmt.Errorf("%w: read API token: %v", errUsage, err)
		}
		list = strings.ReplaceAll(string(data), "\n", ",")
	case env != "" && envFile != "":
		return "", fmt.Errorf("%w: set HOOKD_API_TOKEN or HOOKD_API_TOKEN_FILE, not both", errUsage)
	case env != "":
		source, list = "HOOKD_API_TOKEN", env
	case envFile != "":
		source = "HOOKD_API_TOKEN_FILE " + envFile
		data, err := os.ReadFile(envFile)
		if err != nil {
			return "", fmt.Errorf("%w: read API token: %v", errUsage, err)
		}
		list = strings.ReplaceAll(string(data), "\n", ",")
	default:
		return "", fmt.Errorf("%w: no API token: set HOOKD_API_TOKEN or HOOKD_API_TOKEN_FILE, or pass --token-file", errUsage)
	}
	for t := range strings.SplitSeq(list, ",") {
		if t = strings.TrimSpace(t); t != "" {
			return t, nil
		}
	}
	return "", fmt.Errorf("%w: no API token in %s", errUsage, source)
}
