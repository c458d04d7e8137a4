package checks

import (
	"regexp"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// TestExampleConfigHasEveryKey: deploy/hookd.example.yaml documents every
// key cmd/hookd knows, set or commented out (secrets are commented: they
// belong in files or the environment), and sets no key hookd does not know.
// cmd/hookd's own tests load the file with the real loader.
func TestExampleConfigHasEveryKey(t *testing.T) {
	const rel = "deploy/hookd.example.yaml"
	src := readRepoFile(t, rel)
	var doc map[string]any
	if err := yaml.Unmarshal(src, &doc); err != nil {
		t.Fatalf("%s: %v", rel, err)
	}
	known := map[string]bool{}
	for _, s := range hookdSettings(t) {
		known[s.key] = true
		if s.secret {
			known[s.key+"_file"] = true
		}
	}
	for k := range doc {
		if !known[k] {
			t.Errorf("%s sets %q, which hookd does not know", rel, k)
		}
	}
	for _, s := range hookdSettings(t) {
		documented := regexp.MustCompile(`(?m)^(# ?)?` + regexp.QuoteMeta(s.key) + `:`)
		if !documented.Match(src) {
			t.Errorf("%s does not document %s (as `%s:` or `# %s:`)", rel, s.key, s.key, s.key)
		}
		if s.secret {
			if _, set := doc[s.key]; set {
				t.Errorf("%s sets the secret %s: leave secrets commented out", rel, s.key)
			}
		}
	}
}

// TestEnvExamplesHaveEveryVariable: .env.example (compose) and the systemd
// EnvironmentFile example name every environment variable hookd reads.
func TestEnvExamplesHaveEveryVariable(t *testing.T) {
	for _, rel := range []string{".env.example", "deploy/systemd/hookd.env.example"} {
		src := string(readRepoFile(t, rel))
		lines := strings.Split(src, "\n")
		has := func(name string) bool {
			for _, l := range lines {
				l = strings.TrimSpace(strings.TrimLeft(strings.TrimSpace(l), "#"))
				if strings.HasPrefix(l, name+"=") {
					return true
				}
			}
			return false
		}
		for _, s := range hookdSettings(t) {
			if !has(s.env) {
				t.Errorf("%s does not name %s", rel, s.env)
			}
		}
		if !has("HOOKD_CONFIG") {
			t.Errorf("%s does not name HOOKD_CONFIG", rel)
		}
	}
	src := string(readRepoFile(t, ".env.example"))
	for _, s := range hookdSettings(t) {
		if s.secret && !strings.Contains(src, s.env+"_FILE=") {
			t.Errorf(".env.example does not name %s_FILE", s.env)
		}
	}
}
