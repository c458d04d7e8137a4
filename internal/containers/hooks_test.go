package containers

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/image"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

func TestHookFor(t *testing.T) {
	tests := []struct {
		name    string
		labels  map[string]string
		phase   string
		ok      bool
		want    hook
		wantErr string
	}{
		{"none", map[string]string{"hookd.enable": "true"}, hookPreUpdate, false, hook{}, ""},
		{"shell form", map[string]string{"hookd.pre-update": "rcon-cli save-all"}, hookPreUpdate, true,
			hook{label: "hookd.pre-update", cmd: []string{"/bin/sh", "-c", "rcon-cli save-all"}, timeout: time.Minute, abort: true}, ""},
		{"exec form, timeout, no abort", map[string]string{"hookd.pre-update": `["/app","save"]`, "hookd.hook-timeout": "5m", "hookd.pre-update-abort": "false"},
			hookPreUpdate, true, hook{label: "hookd.pre-update", cmd: []string{"/app", "save"}, timeout: 5 * time.Minute}, ""},
		{"post-update", map[string]string{"hookd.pre-update": "a", "hookd.post-update": "b"}, hookPostUpdate, true,
			hook{label: "hookd.post-update", cmd: []string{"/bin/sh", "-c", "b"}, timeout: time.Minute, abort: true}, ""},
		{"watchtower's, its timeout in minutes", map[string]string{
			"com.centurylinklabs.watchtower.lifecycle.pre-update":         "/dump.sh",
			"com.centurylinklabs.watchtower.lifecycle.pre-update-timeout": "3",
		}, hookPreUpdate, true, hook{label: "com.centurylinklabs.watchtower.lifecycle.pre-update", cmd: []string{"/bin/sh", "-c", "/dump.sh"}, timeout: 3 * time.Minute, abort: true}, ""},
		{"watchtower's timeout 0: none of its own", map[string]string{
			"com.centurylinklabs.watchtower.lifecycle.post-update":         "/restore.sh",
			"com.centurylinklabs.watchtower.lifecycle.post-update-timeout": "0",
		}, hookPostUpdate, true, hook{label: "com.centurylinklabs.watchtower.lifecycle.post-update", cmd: []string{"/bin/sh", "-c", "/restore.sh"}, abort: true}, ""},
		{"hookd's label wins", map[string]string{"hookd.post-update": "mine", "com.centurylinklabs.watchtower.lifecycle.post-update": "theirs"}, hookPostUpdate, true,
			hook{label: "hookd.post-update", cmd: []string{"/bin/sh", "-c", "mine"}, timeout: time.Minute, abort: true}, ""},
		{"bad timeout", map[string]string{"hookd.pre-update": "x", "hookd.hook-timeout": "soon"}, hookPreUpdate, false, hook{}, "hookd.hook-timeout"},
		{"bad watchtower timeout", map[string]string{"com.centurylinklabs.watchtower.lifecycle.pre-update": "x", "com.centurylinklabs.watchtower.lifecycle.pre-update-timeout": "1m"},
			hookPreUpdate, false, hook{}, "whole number of minutes"},
		{"bad exec form", map[string]string{"hookd.pre-update": `["/app", 3]`}, hookPreUpdate, false, hook{}, "JSON array"},
		{"empty", map[string]string{"hookd.pre-update": "  "}, hookPreUpdate, false, hook{}, "empty command"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, ok, err := hookFor(tt.labels, tt.phase)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("hookFor error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || ok != tt.ok {
				t.Fatalf("hookFor = %v, %v, want ok %v", ok, err, tt.ok)
			}
			tt.want.phase = tt.phase
			if ok && (h.label != tt.want.label || !slices.Equal(h.cmd, tt.want.cmd) || h.timeout != tt.want.timeout || h.abort != tt.want.abort) {
				t.Errorf("hookFor = %+v, want %+v", h, tt.want)
			}
		})
	}
}

func TestTailBufferKeepsTheEnd(t *testing.T) {
	b := &tailBuffer{max: 8}
	for _, s := range []string{"0123", "456789", "ab"} {
		b.Write([]byte(s))
	}
	if got := b.String(); got != "456789ab" {
		t.Errorf("tail = %q, want %q", got, "456789ab")
	}
}

func TestLastLines(t *testing.T) {
	var in strings.Builder
	for i := range 30 {
		in.WriteString(strings.Repeat("x", i) + "\r\n\n")
	}
	in.WriteString(strings.Repeat("y", 2000))
	got := lastLines(strings.NewReader(in.String()), 3)
	if len(got) != 3 || got[0] != strings.Repeat("x", 28) || got[1] != strings.Repeat("x", 29) ||
		got[2] != strings.Repeat("y", failedLineMax)+"…" {
		t.Errorf("lastLines = %q, want the last two x lines and the long y line cut", got)
	}
}

func TestManifestID(t *testing.T) {
	img := func(ms ...image.ManifestSummary) image.InspectResponse {
		return image.InspectResponse{ID: "sha256:index", Os: "linux", Architecture: "arm64", Manifests: ms}
	}
	m := func(id, arch string, kind image.ManifestKind, available bool) image.ManifestSummary {
		s := image.ManifestSummary{ID: id, Kind: kind, Available: available}
		if arch != "" {
			s.ImageData = &image.ImageProperties{Platform: ocispec.Platform{OS: "linux", Architecture: arch}}
		}
		return s
	}
	tests := []struct {
		name string
		img  image.InspectResponse
		want string
	}{
		{"no manifests: the id", img(), "sha256:index"},
		{"own platform", img(m("sha256:amd", "amd64", image.ManifestKindImage, true), m("sha256:arm", "arm64", image.ManifestKindImage, true)), "sha256:arm"},
		{"own platform not available, only one is", img(m("sha256:amd", "amd64", image.ManifestKindImage, true), m("sha256:arm", "arm64", image.ManifestKindImage, false)), "sha256:amd"},
		{"attestations do not count", img(m("sha256:att", "", image.ManifestKindAttestation, true), m("sha256:arm", "arm64", image.ManifestKindImage, true)), "sha256:arm"},
		{"several, none ours", img(m("sha256:a", "amd64", image.ManifestKindImage, true), m("sha256:b", "386", image.ManifestKindImage, true)), "sha256:index"},
	}
	for _, tt := range tests {
		if got := manifestID(tt.img); got != tt.want {
			t.Errorf("%s: manifestID = %s, want %s", tt.name, got, tt.want)
		}
	}
}
