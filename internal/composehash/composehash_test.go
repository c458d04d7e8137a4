package composehash

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The hashes Compose v5.6.0 printed for testdata/compose.yml with
// `docker compose --profile web config --hash '*'`, which hashes each
// service without resolving its references to other services. The project
// binds no relative path: Compose hashes a bind mount's absolute source, so
// such a hash would hold only in the checkout it was printed in.
var composeHashes = map[string]string{
	"app":     "bbedfd39659d7d4afe4e8938f0625f908a4d636b5d6cc1563a2e36dde3104393",
	"db":      "94f80b9e45de3de75932406f7b90c572bdd26f40829547dd91d7b436dc1ec86a",
	"torrent": "7e2774cf508dfe717ee2f2c13bee625dcea825d9cf0baca7f73ef119b3c2135c",
	"vpn":     "b580b9969e9166cf1a4f3839eb4137be9c84eb423cb707f7eea91f3093538633",
}

func loadTestdata(t *testing.T) *Loaded {
	t.Helper()
	dir, err := filepath.Abs("testdata")
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"DB_PASSWORD", "APP_TAG"} {
		t.Setenv(v, "") // restored after the test
		os.Unsetenv(v)  // the .env file sets them, as for Compose
	}
	l, err := Load(context.Background(), Project{Name: "hashcheck", WorkingDir: dir, ConfigFiles: []string{filepath.Join(dir, "compose.yml")}})
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return l
}

func TestServiceHashIsCompose(t *testing.T) {
	l := loadTestdata(t)
	for name, want := range composeHashes {
		s, ok := l.project.Services[name] // app too, although it is in a profile
		if !ok {
			t.Fatalf("service %q not loaded", name)
		}
		got, err := ServiceHash(s)
		if err != nil || got != want {
			t.Errorf("ServiceHash(%s) = %s, %v, want Compose's %s", name, got, err, want)
		}
	}
}

func TestHashResolvesServiceReferences(t *testing.T) {
	l := loadTestdata(t)
	ids := map[string]string{"vpn": strings.Repeat("a", 64)}
	containerOf := func(s string) string { return ids[s] }
	old, err := l.Hash("torrent", containerOf)
	if err != nil {
		t.Fatalf("Hash(torrent): %v", err)
	}
	if old == composeHashes["torrent"] {
		t.Errorf("Hash(torrent) = the unresolved hash; network_mode service:vpn was not resolved")
	}
	again, _ := l.Hash("torrent", containerOf)
	ids["vpn"] = strings.Repeat("b", 64)
	moved, _ := l.Hash("torrent", containerOf)
	if again != old || moved == old {
		t.Errorf("Hash(torrent) = %s, again %s, with another vpn container %s; want stable, and changed with the container", old, again, moved)
	}
	if got, _ := l.Hash("db", containerOf); got != composeHashes["db"] {
		t.Errorf("Hash(db) = %s, want %s (no references)", got, composeHashes["db"])
	}
	if _, err := l.Hash("torrent", func(string) string { return "" }); err == nil {
		t.Errorf("Hash(torrent) with no vpn container: no error")
	}
	if _, err := l.Hash("nope", containerOf); err == nil {
		t.Errorf("Hash(nope): no error for a service the project lacks")
	}
}

func TestLoadUnreadable(t *testing.T) {
	_, err := Load(context.Background(), Project{Name: "p", WorkingDir: "/nonexistent", ConfigFiles: []string{"/nonexistent/compose.yml"}})
	if !errors.Is(err, ErrUnreadable) {
		t.Errorf("Load(missing file) error = %v, want ErrUnreadable", err)
	}
}

func TestRouteLogs(t *testing.T) {
	var buf strings.Builder
	RouteLogs(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})))
	dir := t.TempDir()
	f := filepath.Join(dir, "compose.yml")
	if err := os.WriteFile(f, []byte("version: \"3\"\nservices:\n  a:\n    image: x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(context.Background(), Project{Name: "p", WorkingDir: dir, ConfigFiles: []string{f}}); err != nil {
		t.Fatalf("Load: %v", err)
	}
	if got := buf.String(); !strings.Contains(got, "level=DEBUG") || !strings.Contains(got, "obsolete") {
		t.Errorf("hookd's log = %q, want compose-go's warning about `version` at debug level", got)
	}
}
