package deploy

import (
	"strings"
	"testing"
)

func TestRepoDigest(t *testing.T) {
	ref, _ := ParseRef("127.0.0.1:5000/acme/web:latest")
	d1 := "sha256:" + strings.Repeat("1", 64)
	d2 := "sha256:" + strings.Repeat("2", 64)
	rds := []string{"127.0.0.1:5000/other@" + d2, "127.0.0.1:5000/acme/web@" + d1, "127.0.0.1:5000/acme/web@" + d2}
	if got := RepoDigest(rds, ref, ""); got != d1 {
		t.Errorf("RepoDigest() = %s, want first of the repository, %s", got, d1)
	}
	if got := RepoDigest(rds, ref, d2); got != d2 {
		t.Errorf("RepoDigest(want d2) = %s, want %s", got, d2)
	}
	if HasDigest(rds[:1], ref, d2) {
		t.Errorf("HasDigest() = true for a digest of another repository, want false")
	}
	if HasDigest(rds, ref, "") {
		t.Errorf("HasDigest(\"\") = true, want false")
	}
}

func TestEligible(t *testing.T) {
	on := map[string]string{LabelEnable: "true"}
	tests := []struct {
		name   string
		cname  string
		labels map[string]string
		want   bool
	}{
		{"labelled", "web", on, true},
		{"unlabelled", "web", map[string]string{}, false},
		{"label false", "web", map[string]string{LabelEnable: "false"}, false},
		{"swarm task", "web.1.abc", map[string]string{LabelEnable: "true", "com.docker.swarm.task.id": "x"}, false},
		{"hookd new", "web" + SuffixNew, on, false},
		{"hookd old", "web" + SuffixOld, on, false},
		{"hookd failed", "web" + SuffixFailed, on, false},
	}
	for _, tt := range tests {
		if got := Eligible(tt.cname, tt.labels); got != tt.want {
			t.Errorf("%s: Eligible(%q, %v) = %v, want %v", tt.name, tt.cname, tt.labels, got, tt.want)
		}
	}
}

func TestScope(t *testing.T) {
	labels := map[string]string{"team": "web", "hookd.enable": "true"}
	tests := []struct {
		scope Scope
		want  bool
	}{
		{"", true},
		{"team", true},
		{"team=web", true},
		{"team=db", false},
		{"owner", false},
	}
	for _, tt := range tests {
		if got := tt.scope.Contains(labels); got != tt.want {
			t.Errorf("Scope(%q).Contains(%v) = %v, want %v", tt.scope, labels, got, tt.want)
		}
	}
}

func TestHookdLabels(t *testing.T) {
	got := HookdLabels(map[string]string{
		LabelEnable: "true", LabelURL: "https://web.example.net",
		"com.docker.compose.service": "web", "org.opencontainers.image.revision": "abc", "hookdx": "no",
	})
	want := map[string]string{LabelEnable: "true", LabelURL: "https://web.example.net"}
	if len(got) != len(want) || got[LabelEnable] != want[LabelEnable] || got[LabelURL] != want[LabelURL] {
		t.Errorf("HookdLabels = %v, want %v", got, want)
	}
	if got := HookdLabels(map[string]string{"maintainer": "x"}); got != nil {
		t.Errorf("HookdLabels without hookd labels = %v, want nil", got)
	}
}
