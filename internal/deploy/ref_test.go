package deploy

import "testing"

func TestParseRef(t *testing.T) {
	tests := []struct {
		in   string
		want string // "" means an error
	}{
		{"nginx", "docker.io/library/nginx:latest"},
		{"nginx:1.27", "docker.io/library/nginx:1.27"},
		{"library/nginx", "docker.io/library/nginx:latest"},
		{"docker.io/library/nginx:latest", "docker.io/library/nginx:latest"},
		{"index.docker.io/library/nginx", "docker.io/library/nginx:latest"},
		{"registry-1.docker.io/owner/app", "docker.io/owner/app:latest"},
		{"owner/app", "docker.io/owner/app:latest"},
		{"GHCR.io/And3rn3t/Minecraft-Server", "ghcr.io/and3rn3t/minecraft-server:latest"},
		{"ghcr.io/o/app:Sha-1A2b", "ghcr.io/o/app:Sha-1A2b"},
		{"127.0.0.1:5000/o/app:v2", "127.0.0.1:5000/o/app:v2"},
		{"localhost:5000/app", "localhost:5000/app:latest"},
		{"localhost/app", "localhost/app:latest"},
		{" ghcr.io/o/app ", "ghcr.io/o/app:latest"},
		{"ghcr.io/o/app:v1@sha256:" + hex64, "ghcr.io/o/app:v1@sha256:" + hex64},
		{"ghcr.io/o/app@sha256:" + hex64, "ghcr.io/o/app:latest@sha256:" + hex64},
		{"", ""},
		{"ghcr.io//www", ""},
		{"ghcr.io/o/a..b", ""},
		{"ghcr.io/o/-a", ""},
		{"ghcr.io/o/app:", ""},
		{"ghcr.io/o/app:.hidden", ""},
		{"ghcr.io/o/app@sha256:abc", ""},
		{"ghcr.io/o/app@md5:" + hex64, ""},
		{"ghcr.io/o/app/", ""},
		{"ghcr.io/o/ap p", ""},
	}
	for _, tt := range tests {
		got, err := ParseRef(tt.in)
		switch {
		case tt.want == "" && err == nil:
			t.Errorf("ParseRef(%q) = %s, want an error", tt.in, got)
		case tt.want != "" && err != nil:
			t.Errorf("ParseRef(%q) error = %v, want %s", tt.in, err, tt.want)
		case tt.want != "" && got.String() != tt.want:
			t.Errorf("ParseRef(%q) = %s, want %s", tt.in, got, tt.want)
		}
	}
}

const hex64 = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
