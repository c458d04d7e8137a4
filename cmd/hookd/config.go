package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/and3rn3t/hookd/internal/verify"
)

// Config is everything hookd serve needs. It is read from defaults, then the
// YAML file, then the environment, then flags; later sources win.
type Config struct {
	Listen           string
	MetricsListen    string
	MetricsTokens    []string
	WebhookSecrets   []string
	APITokens        []string
	StateDir         string
	PollInterval     time.Duration
	RegistryHost     string
	RegistryUsername string
	RegistryPassword string
	HealthTimeout    time.Duration
	SettleTime       time.Duration
	Concurrency      int
	QueueSize        int
	MaxBodyBytes     int64
	LogFormat        string
	LogLevel         string
	PruneImages      bool
	LabelFilter      string
	ShutdownTimeout  time.Duration
	PublicURL        string

	// Reporting: GitHub deployment statuses and notifications.
	GitHubToken         string
	GitHubAPIURL        string
	GitHubEnvironment   string
	GitHubRequireChecks bool
	NotifyURLs          urlList
	NotifyLevel         string
	NotifyTemplate      string
	NotifyTemplateFile  string
	// Verify is off, warn or enforce; VerifyTrustedRootFile pins the
	// Sigstore trusted root (default: public-good through TUF).
	Verify                string
	VerifyTrustedRootFile string
}

// urlList is a list of URLs separated by white space (a space, a new
// line), as watchtower takes its notification URLs: a URL may hold commas
// (ntfy tags, Telegram chats) but never a space.
type urlList []string

// setting describes one configuration key in all its spellings. Secrets are
// never flags (they would show in ps); they come from the file, the
// environment or a file named by NAME_FILE.
type setting struct {
	key    string // YAML key; the flag is the key with '-' for '_'
	env    string
	def    string
	help   string
	secret bool
	field  func(c *Config) any // pointer to the Config field
}

func (s setting) flagName() string { return strings.ReplaceAll(s.key, "_", "-") }

var settings = []setting{
	{key: "listen", env: "HOOKD_LISTEN", def: ":8080",
		help:  "address the HTTP server listens on (webhook, API, health, metrics)",
		field: func(c *Config) any { return &c.Listen }},
	{key: "webhook_secret", env: "HOOKD_WEBHOOK_SECRET", secret: true,
		help:  "GitHub webhook secret (required); several, comma-separated (one per line in a file), while rotating",
		field: func(c *Config) any { return &c.WebhookSecrets }},
	{key: "api_token", env: "HOOKD_API_TOKEN", secret: true,
		help:  "bearer token(s) for /api/v1 and the client verbs, and what people sign in to the status page with; both are off without one",
		field: func(c *Config) any { return &c.APITokens }},
	{key: "state_dir", env: "HOOKD_STATE_DIR", def: "/var/lib/hookd",
		help:  "directory of the state file hookd.db (created 0700)",
		field: func(c *Config) any { return &c.StateDir }},
	{key: "poll_interval", env: "HOOKD_POLL_INTERVAL", def: "5m",
		help:  "poll the registry after this much webhook silence per target (Go duration, 0 = off)",
		field: func(c *Config) any { return &c.PollInterval }},
	{key: "registry_host", env: "HOOKD_REGISTRY_HOST", def: "ghcr.io",
		help:  "registry host GitHub package events map to",
		field: func(c *Config) any { return &c.RegistryHost }},
	{key: "registry_username", env: "HOOKD_REGISTRY_USERNAME",
		help:  "user name for pulls and polls from registry_host (with registry_password)",
		field: func(c *Config) any { return &c.RegistryUsername }},
	{key: "registry_password", env: "HOOKD_REGISTRY_PASSWORD", secret: true,
		help:  "password or token (read:packages) for registry_host",
		field: func(c *Config) any { return &c.RegistryPassword }},
	{key: "health_timeout", env: "HOOKD_HEALTH_TIMEOUT", def: "60s",
		help:  "how long a new container may take to become healthy before rollback (label hookd.health-timeout overrides)",
		field: func(c *Config) any { return &c.HealthTimeout }},
	{key: "settle_time", env: "HOOKD_SETTLE_TIME", def: "5s",
		help:  "how long a container without healthcheck must keep running to count as healthy",
		field: func(c *Config) any { return &c.SettleTime }},
	{key: "concurrency", env: "HOOKD_CONCURRENCY", def: "1",
		help:  "targets deployed at the same time",
		field: func(c *Config) any { return &c.Concurrency }},
	{key: "queue_size", env: "HOOKD_QUEUE_SIZE", def: "64",
		help:  "deploy jobs that may wait; beyond it deliveries get 503",
		field: func(c *Config) any { return &c.QueueSize }},
	{key: "max_body_bytes", env: "HOOKD_MAX_BODY_BYTES", def: "1048576",
		help:  "largest webhook body accepted (413 beyond)",
		field: func(c *Config) any { return &c.MaxBodyBytes }},
	{key: "metrics_listen", env: "HOOKD_METRICS_LISTEN",
		help:  "serve /metrics on this address instead of the main listener",
		field: func(c *Config) any { return &c.MetricsListen }},
	{key: "metrics_token", env: "HOOKD_METRICS_TOKEN", secret: true,
		help:  "bearer token(s) required on /metrics (off when empty)",
		field: func(c *Config) any { return &c.MetricsTokens }},
	{key: "prune_images", env: "HOOKD_PRUNE_IMAGES", def: "false",
		help:  "remove a target's images older than the previous one after a deploy",
		field: func(c *Config) any { return &c.PruneImages }},
	{key: "public_url", env: "HOOKD_PUBLIC_URL",
		help:  "the address people reach hookd at (https://pi.example.net/hookd); links in notifications and GitHub deployment statuses point there",
		field: func(c *Config) any { return &c.PublicURL }},
	{key: "github_token", env: "HOOKD_GITHUB_TOKEN", secret: true,
		help:  "token that reports deploys as GitHub deployments on the commit (Deployments: read and write, or classic repo_deployment); off without one",
		field: func(c *Config) any { return &c.GitHubToken }},
	{key: "github_api_url", env: "HOOKD_GITHUB_API_URL", def: "https://api.github.com/",
		help:  "GitHub's REST API; for GitHub Enterprise Server https://HOST/api/v3/",
		field: func(c *Config) any { return &c.GitHubAPIURL }},
	{key: "github_environment", env: "HOOKD_GITHUB_ENVIRONMENT",
		help:  "environment of the GitHub deployments (label hookd.github-environment overrides); default: the Docker host's name",
		field: func(c *Config) any { return &c.GitHubEnvironment }},
	{key: "github_require_checks", env: "HOOKD_GITHUB_REQUIRE_CHECKS", def: "false",
		help:  "refuse to deploy a commit whose GitHub checks are not all green (waits for pending ones, refuses when GitHub cannot be asked)",
		field: func(c *Config) any { return &c.GitHubRequireChecks }},
	{key: "notify_urls", env: "HOOKD_NOTIFY_URLS", secret: true,
		help:  "shoutrrr URLs to notify of finished deploys (ntfy://, discord://, generic+https://, …), separated by spaces or lines",
		field: func(c *Config) any { return &c.NotifyURLs }},
	{key: "notify_level", env: "HOOKD_NOTIFY_LEVEL", def: "info",
		help:  "which deploys are told: error (rollbacks, failures, refusals), info (also successes) or debug (also up to date)",
		field: func(c *Config) any { return &c.NotifyLevel }},
	{key: "notify_template", env: "HOOKD_NOTIFY_TEMPLATE",
		help:  "Go text/template for the notification text (see the README), instead of hookd's",
		field: func(c *Config) any { return &c.NotifyTemplate }},
	{key: "notify_template_file", env: "HOOKD_NOTIFY_TEMPLATE_FILE",
		help:  "file holding notify_template",
		field: func(c *Config) any { return &c.NotifyTemplateFile }},
	{key: "verify", env: "HOOKD_VERIFY", def: "off",
		help:  "verify image signatures (Sigstore) before deploying: off, warn (deploy and record the failure) or enforce (refuse what the expected workflow did not sign); label hookd.verify overrides per target",
		field: func(c *Config) any { return &c.Verify }},
	{key: "verify_trusted_root_file", env: "HOOKD_VERIFY_TRUSTED_ROOT_FILE",
		help:  "Sigstore trusted root to verify against: a trusted_root.json, or what gh attestation trusted-root prints (also GitHub's own instance, which signs private repositories' attestations); default: the public-good root through TUF, cached in state_dir",
		field: func(c *Config) any { return &c.VerifyTrustedRootFile }},
	{key: "label_filter", env: "HOOKD_LABEL_FILTER",
		help:  "only manage targets that also carry this label (key or key=value), so several hookd can share one engine",
		field: func(c *Config) any { return &c.LabelFilter }},
	{key: "log_format", env: "HOOKD_LOG_FORMAT", def: "text",
		help:  "log format: text or json",
		field: func(c *Config) any { return &c.LogFormat }},
	{key: "log_level", env: "HOOKD_LOG_LEVEL", def: "info",
		help:  "log level: debug, info, warn or error",
		field: func(c *Config) any { return &c.LogLevel }},
	{key: "shutdown_timeout", env: "HOOKD_SHUTDOWN_TIMEOUT", def: "30s",
		help:  "how long shutdown may take: a quarter for open HTTP requests, the rest for the current deploy step",
		field: func(c *Config) any { return &c.ShutdownTimeout }},
}

// configError lists every problem found, so that one run shows them all.
type configError struct{ problems []string }

func (e *configError) Error() string {
	return "invalid configuration:\n  " + strings.Join(e.problems, "\n  ")
}

func (e *configError) add(format string, args ...any) {
	e.problems = append(e.problems, fmt.Sprintf(format, args...))
}

// loadConfig builds the Config from defaults, the YAML file, the environment
// and args, in that order. It returns flag.ErrHelp after printing usage for
// -h/--help, and a *configError listing every problem otherwise.
func loadConfig(args []string, getenv func(string) string, stderr io.Writer) (Config, error) {
	var c Config
	problems := &configError{}
	for _, s := range settings {
		if s.def != "" {
			if err := assign(s.field(&c), s.def); err != nil {
				panic(fmt.Sprintf("bad default for %s: %v", s.key, err)) // programming error
			}
		}
	}

	fs := flag.NewFlagSet("hookd", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	configFile := fs.String("config", "", "YAML configuration `file` (also HOOKD_CONFIG)")
	flagValues := map[string]*string{}
	for _, s := range settings {
		name := s.flagName()
		if s.secret {
			name += "-file"
		}
		flagValues[s.key] = fs.String(name, "", s.help)
	}
	fs.Usage = func() { usage(stderr) }
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			usage(stderr)
			return c, flag.ErrHelp
		}
		return c, fmt.Errorf("%w: %v (see hookd --help)", errUsage, err)
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("%w: unexpected argument %q (see hookd --help)", errUsage, fs.Arg(0))
	}

	path := *configFile
	if path == "" {
		path = getenv("HOOKD_CONFIG")
	}
	if path != "" {
		values, err := readYAML(path)
		if err != nil {
			problems.add("%v", err)
		}
		for _, s := range settings {
			if v, ok := values[s.key]; ok {
				if err := assign(s.field(&c), v); err != nil {
					problems.add("%s: %s: %v", path, s.key, err)
				}
			}
			if s.secret {
				if f, ok := values[s.key+"_file"]; ok {
					if _, both := values[s.key]; both {
						problems.add("%s: set %s or %s_file, not both", path, s.key, s.key)
					}
					applySecretFile(&c, s, f, path+": "+s.key+"_file", problems)
				}
			}
		}
	}

	for _, s := range settings {
		v, fileName := getenv(s.env), ""
		if s.secret {
			fileName = getenv(s.env + "_FILE")
		}
		if v != "" && fileName != "" {
			problems.add("set %s or %s_FILE, not both", s.env, s.env)
			continue
		}
		if v != "" {
			if err := assign(s.field(&c), v); err != nil {
				problems.add("%s: %v", s.env, err)
			}
		}
		if fileName != "" {
			applySecretFile(&c, s, fileName, s.env+"_FILE", problems)
		}
	}

	fs.Visit(func(f *flag.Flag) {
		for _, s := range settings {
			switch {
			case s.secret && f.Name == s.flagName()+"-file":
				applySecretFile(&c, s, *flagValues[s.key], "--"+f.Name, problems)
			case !s.secret && f.Name == s.flagName():
				if err := assign(s.field(&c), *flagValues[s.key]); err != nil {
					problems.add("--%s: %v", f.Name, err)
				}
			}
		}
	})

	validate(&c, problems)
	if len(problems.problems) > 0 {
		return c, problems
	}
	return c, nil
}

// readYAML reads the file into key → raw value; unknown keys are errors
// (a typo must not pass silently), with the line they are on.
func readYAML(path string) (map[string]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config file: %w", err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	values := map[string]string{}
	if len(doc.Content) == 0 {
		return values, nil // an empty file is fine
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("%s: line %d: top level must be a mapping of key: value", path, root.Line)
	}
	known := map[string]setting{}
	for _, s := range settings {
		known[s.key] = s
		if s.secret {
			known[s.key+"_file"] = s
		}
	}
	var problems []string
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		s, ok := known[k.Value]
		switch {
		case !ok:
			problems = append(problems, fmt.Sprintf("%s: line %d: unknown key %q", path, k.Line, k.Value))
		case v.Kind == yaml.ScalarNode:
			values[k.Value] = v.Value
		case v.Kind == yaml.SequenceNode && s.secret && k.Value == s.key:
			items := make([]string, 0, len(v.Content))
			for _, it := range v.Content {
				items = append(items, it.Value)
			}
			sep := ","
			if _, ok := s.field(&Config{}).(*urlList); ok {
				sep = "\n"
			}
			values[k.Value] = strings.Join(items, sep)
		default:
			problems = append(problems, fmt.Sprintf("%s: line %d: %s must be a single value", path, v.Line, k.Value))
		}
	}
	if len(problems) > 0 {
		return values, errors.New(strings.Join(problems, "\n  "))
	}
	return values, nil
}

// applySecretFile reads a secret from a file: one value per non-empty line,
// trimmed (files written with echo end in a newline). Errors name the file,
// never its content.
func applySecretFile(c *Config, s setting, name, source string, problems *configError) {
	data, err := os.ReadFile(name)
	if err != nil {
		problems.add("%s: %v", source, err)
		return
	}
	var lines []string
	for _, l := range strings.Split(string(data), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			lines = append(lines, l)
		}
	}
	if len(lines) == 0 {
		problems.add("%s: file %s is empty", source, name)
		return
	}
	switch p := s.field(c).(type) {
	case *[]string:
		*p = lines
	case *urlList:
		*p = strings.Fields(strings.Join(lines, "\n"))
	case *string:
		*p = lines[0]
	}
}

// assign parses v into the field p points at.
func assign(p any, v string) error {
	v = strings.TrimSpace(v)
	switch p := p.(type) {
	case *string:
		*p = v
	case *[]string:
		*p = nil
		for _, item := range strings.Split(v, ",") {
			if item = strings.TrimSpace(item); item != "" {
				*p = append(*p, item)
			}
		}
	case *urlList:
		*p = strings.Fields(v)
	case *time.Duration:
		if v == "0" {
			*p = 0
			return nil
		}
		d, err := time.ParseDuration(v)
		if err != nil {
			return fmt.Errorf("%q is not a duration (examples: 30s, 5m, 1h)", v)
		}
		*p = d
	case *int:
		n, err := strconv.Atoi(v)
		if err != nil {
			return fmt.Errorf("%q is not a whole number", v)
		}
		*p = n
	case *int64:
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return fmt.Errorf("%q is not a whole number", v)
		}
		*p = n
	case *bool:
		b, err := strconv.ParseBool(v)
		if err != nil {
			return fmt.Errorf("%q is not true or false", v)
		}
		*p = b
	default:
		panic(fmt.Sprintf("unsupported config field %T", p))
	}
	return nil
}

func validate(c *Config, problems *configError) {
	if len(c.WebhookSecrets) == 0 {
		problems.add("webhook_secret (HOOKD_WEBHOOK_SECRET) is required: without it anyone could trigger deploys")
	}
	for _, s := range c.WebhookSecrets {
		if len(s) < 8 {
			problems.add("webhook_secret: every secret must be at least 8 characters")
			break
		}
	}
	for _, t := range c.APITokens {
		if len(t) < 16 {
			problems.add("api_token: every token must be at least 16 characters")
			break
		}
	}
	checkAddr := func(key, addr string) {
		if _, port, err := net.SplitHostPort(addr); err != nil || port == "" {
			problems.add("%s: %q is not host:port (example: :8080)", key, addr)
		}
	}
	checkAddr("listen", c.Listen)
	if c.MetricsListen != "" {
		checkAddr("metrics_listen", c.MetricsListen)
		if c.MetricsListen == c.Listen {
			problems.add("metrics_listen: must differ from listen (leave it empty to serve /metrics on listen)")
		}
	}
	if c.StateDir == "" {
		problems.add("state_dir: must not be empty")
	}
	if c.PollInterval < 0 || (c.PollInterval > 0 && c.PollInterval < 10*time.Second) {
		problems.add("poll_interval: must be 0 (off) or at least 10s, got %s", c.PollInterval)
	}
	if c.RegistryHost == "" || strings.ContainsAny(c.RegistryHost, "/ ") {
		problems.add("registry_host: %q is not a registry host name (example: ghcr.io)", c.RegistryHost)
	}
	if (c.RegistryUsername == "") != (c.RegistryPassword == "") {
		problems.add("registry_username and registry_password: set both or neither")
	}
	if c.HealthTimeout <= 0 {
		problems.add("health_timeout: must be positive, got %s", c.HealthTimeout)
	}
	if c.SettleTime < 0 {
		problems.add("settle_time: must not be negative, got %s", c.SettleTime)
	}
	if c.Concurrency < 1 || c.Concurrency > 16 {
		problems.add("concurrency: must be between 1 and 16, got %d", c.Concurrency)
	}
	if c.QueueSize < 1 || c.QueueSize > 10000 {
		problems.add("queue_size: must be between 1 and 10000, got %d", c.QueueSize)
	}
	// GitHub caps payloads at 25 MB; its package events are about 11 KB.
	if c.MaxBodyBytes < 1024 || c.MaxBodyBytes > 25<<20 {
		problems.add("max_body_bytes: must be between 1024 and 26214400, got %d", c.MaxBodyBytes)
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		problems.add("log_format: must be text or json, got %q", c.LogFormat)
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		problems.add("log_level: must be debug, info, warn or error, got %q", c.LogLevel)
	}
	if c.PublicURL != "" {
		if u, err := url.Parse(c.PublicURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil {
			problems.add("public_url: %q is not an http(s) address (example: https://pi.example.net/hookd)", c.PublicURL)
		}
	}
	validateReporting(c, problems)
	if k, _, _ := strings.Cut(c.LabelFilter, "="); c.LabelFilter != "" && (k == "" || strings.ContainsAny(c.LabelFilter, " ,")) {
		problems.add("label_filter: %q is not key or key=value", c.LabelFilter)
	}
	if c.ShutdownTimeout <= 0 {
		problems.add("shutdown_timeout: must be positive, got %s", c.ShutdownTimeout)
	}
	if _, err := verify.ParseMode(c.Verify); err != nil {
		problems.add("verify: %v", err)
	}
	if c.VerifyTrustedRootFile != "" {
		if _, err := verify.LoadTrustedRootFile(c.VerifyTrustedRootFile); err != nil {
			problems.add("verify_trusted_root_file: %v", err)
		}
	}
}

func usage(w io.Writer) {
	var b bytes.Buffer
	b.WriteString(`hookd: push-to-deploy for Docker hosts from GitHub Container Registry.

Usage:
  hookd [flags]                  serve (webhook, API, metrics)
  hookd deploy [TARGET] [flags]  ask a running hookd to deploy (see hookd deploy --help)
  hookd status [--json]          show targets and recent jobs of a running hookd
  hookd healthcheck              exit 0 when the local hookd answers /healthz
  hookd version                  print the version

Settings (a flag wins over the environment, which wins over the config file):
  --config FILE, HOOKD_CONFIG    YAML file with the keys below

`)
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  KEY\tENVIRONMENT\tFLAG\tDEFAULT\tMEANING")
	for _, s := range settings {
		flagName, env := "--"+s.flagName(), s.env
		if s.secret {
			flagName += "-file"
			env += "[_FILE]"
		}
		def := s.def
		if def == "" {
			def = "-"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", s.key, env, flagName, def, s.help)
	}
	tw.Flush()
	b.WriteString(`
Secrets are never flags: give them in the environment, in the config file, or
in a file named by NAME_FILE / the key with _file / --NAME-file (Docker and
systemd secrets). Docker is found the standard way (DOCKER_HOST, else the
local socket). Targets are running containers labelled hookd.enable=true.
`)
	w.Write(b.Bytes())
}
