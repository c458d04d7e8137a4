package webhook

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"github.com/and3rn3t/hookd/internal/deploy"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/and3rn3t/hookd/internal/metrics"
)

const realDigest = "sha256:89160c587d0c36bf54090497a465445c14980ba48efbcf3b0d03c49b76f3feb8"

// TestHandlerAnswers sends each kind of correctly signed delivery, in both
// content types, and checks the answer, what was submitted, the counter and
// the log line.
func TestHandlerAnswers(t *testing.T) {
	real := readFixture(t, realFixture)
	untagged := edit(t, real,
		`"name": "0e2a89b"`, `"name": ""`,
		`"package_url": "ghcr.io/theryangeary/www:0e2a89b"`, `"package_url": "ghcr.io/theryangeary/www:"`)
	withTag := func(tag string) []byte {
		return edit(t, real,
			`"name": "0e2a89b"`, `"name": "`+tag+`"`,
			`"package_url": "ghcr.io/theryangeary/www:0e2a89b"`, `"package_url": "ghcr.io/theryangeary/www:`+tag+`"`)
	}
	hex64 := strings.TrimPrefix(realDigest, "sha256:")

	tests := []struct {
		name        string
		event       string
		body        []byte
		wantCode    int
		wantStatus  string // the answer's "status"
		wantReason  string
		wantImage   string
		wantSubmit  bool
		wantEvent   string // metrics label
		wantOutcome string
	}{
		{
			name: "real container publish", event: "package", body: real,
			wantCode: 202, wantStatus: "queued", wantImage: "ghcr.io/theryangeary/www:0e2a89b",
			wantSubmit: true, wantEvent: "package", wantOutcome: metrics.OutcomeQueued,
		},
		{
			name: "registry_package from a GitHub App", event: "registry_package",
			body:     edit(t, real, `"package": {`, `"registry_package": {`),
			wantCode: 202, wantStatus: "queued", wantImage: "ghcr.io/theryangeary/www:0e2a89b",
			wantSubmit: true, wantEvent: "registry_package", wantOutcome: metrics.OutcomeQueued,
		},
		{
			name: "action updated", event: "package", body: edit(t, real, `"action": "published"`, `"action": "updated"`),
			wantCode: 202, wantStatus: "queued", wantImage: "ghcr.io/theryangeary/www:0e2a89b",
			wantSubmit: true, wantEvent: "package", wantOutcome: metrics.OutcomeQueued,
		},
		{
			name: "ping", event: "ping", body: readFixture(t, "ping.json"),
			wantCode: 200, wantStatus: "pong", wantEvent: "ping", wantOutcome: metrics.OutcomeIgnored,
		},
		{
			name: "ping from a GitHub App", event: "ping", body: readFixture(t, "ping.with-app_id.json"),
			wantCode: 200, wantStatus: "pong", wantEvent: "ping", wantOutcome: metrics.OutcomeIgnored,
		},
		{
			name: "untagged per-platform manifest", event: "package", body: untagged,
			wantCode: 202, wantStatus: "ignored", wantReason: reasonUntagged,
			wantEvent: "package", wantOutcome: metrics.OutcomeIgnored,
		},
		{
			name: "cosign signature tag", event: "package", body: withTag("sha256-" + hex64 + ".sig"),
			wantCode: 202, wantStatus: "ignored", wantReason: reasonArtifactTag,
			wantEvent: "package", wantOutcome: metrics.OutcomeIgnored,
		},
		{
			name: "attestation tag", event: "registry_package",
			body:     edit(t, withTag("sha256-"+hex64+".att"), `"package": {`, `"registry_package": {`),
			wantCode: 202, wantStatus: "ignored", wantReason: reasonArtifactTag,
			wantEvent: "registry_package", wantOutcome: metrics.OutcomeIgnored,
		},
		{
			name: "SBOM tag", event: "package", body: withTag("sha256-" + hex64 + ".sbom"),
			wantCode: 202, wantStatus: "ignored", wantReason: reasonArtifactTag,
			wantEvent: "package", wantOutcome: metrics.OutcomeIgnored,
		},
		{
			name: "referrers fallback tag", event: "package", body: withTag("sha256-" + hex64),
			wantCode: 202, wantStatus: "ignored", wantReason: reasonArtifactTag,
			wantEvent: "package", wantOutcome: metrics.OutcomeIgnored,
		},
		{
			name: "npm package (octokit sample)", event: "package", body: readFixture(t, "package.published.npm.json"),
			wantCode: 202, wantStatus: "ignored", wantReason: reasonNotContainer,
			wantEvent: "package", wantOutcome: metrics.OutcomeIgnored,
		},
		{
			name: "npm package derived from the real one", event: "package",
			body:     edit(t, real, `"ecosystem": "CONTAINER"`, `"ecosystem": "NPM"`, `"package_type": "CONTAINER"`, `"package_type": "npm"`),
			wantCode: 202, wantStatus: "ignored", wantReason: reasonNotContainer,
			wantEvent: "package", wantOutcome: metrics.OutcomeIgnored,
		},
		{
			name: "octokit docker sample says package_type npm", event: "registry_package",
			body:     readFixture(t, "registry_package.published.json"),
			wantCode: 202, wantStatus: "ignored", wantReason: reasonNotContainer,
			wantEvent: "registry_package", wantOutcome: metrics.OutcomeIgnored,
		},
		{
			name: "action deleted", event: "package", body: edit(t, real, `"action": "published"`, `"action": "deleted"`),
			wantCode: 202, wantStatus: "ignored", wantReason: reasonAction,
			wantEvent: "package", wantOutcome: metrics.OutcomeIgnored,
		},
		{
			name: "package_url names another repository", event: "package",
			body:     edit(t, real, `"package_url": "ghcr.io/theryangeary/www:0e2a89b"`, `"package_url": "ghcr.io/someone-else/www:0e2a89b"`),
			wantCode: 202, wantStatus: "ignored", wantReason: reasonURLMismatch,
			wantEvent: "package", wantOutcome: metrics.OutcomeIgnored,
		},
		{
			name: "package name that is no image reference", event: "package",
			body: edit(t, real, `"name": "www",
    "namespace"`, `"name": "w w",
    "namespace"`, `"package_url": "ghcr.io/theryangeary/www:0e2a89b"`, `"package_url": "ghcr.io/theryangeary/w w:0e2a89b"`),
			wantCode: 202, wantStatus: "ignored", wantReason: reasonBadRef,
			wantEvent: "package", wantOutcome: metrics.OutcomeIgnored,
		},
		{
			name: "other event type", event: "push", body: []byte(`{"ref":"refs/heads/main"}`),
			wantCode: 202, wantStatus: "ignored", wantReason: reasonEvent,
			wantEvent: "other", wantOutcome: metrics.OutcomeIgnored,
		},
	}
	for _, tt := range tests {
		for _, form := range []bool{false, true} {
			name := tt.name + "/json"
			if form {
				name = tt.name + "/form"
			}
			t.Run(name, func(t *testing.T) {
				e := newEnv(t, Config{}, "www")
				id := "d1a2b3c4-0000-4000-8000-" + strconv.Itoa(len(tt.name))
				rec, got := send(t, e.h, hook{event: tt.event, id: id, body: tt.body, form: form, secret: newSecret})

				if rec.Code != tt.wantCode {
					t.Errorf("status = %d (%s), want %d", rec.Code, rec.Body, tt.wantCode)
				}
				if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
					t.Errorf("Content-Type = %q, want application/json", ct)
				}
				if got.Status != tt.wantStatus || got.Reason != tt.wantReason || got.Image != tt.wantImage {
					t.Errorf("answer = status %q reason %q image %q, want %q %q %q",
						got.Status, got.Reason, got.Image, tt.wantStatus, tt.wantReason, tt.wantImage)
				}
				if got.DeliveryID != id {
					t.Errorf("delivery_id = %q, want %q", got.DeliveryID, id)
				}
				if n := len(e.sub.accepted()); n != map[bool]int{true: 1}[tt.wantSubmit] {
					t.Errorf("submitted %d requests, want submit=%v", n, tt.wantSubmit)
				}
				if v := testutil.ToFloat64(e.metrics.WebhookDeliveries.WithLabelValues(tt.wantEvent, tt.wantOutcome)); v != 1 {
					t.Errorf("hookd_webhook_deliveries_total{event=%q,outcome=%q} = %v, want 1", tt.wantEvent, tt.wantOutcome, v)
				}
				if v := testutil.CollectAndCount(e.metrics.WebhookDeliveries); v != 1 {
					t.Errorf("deliveries counter has %d series, want 1", v)
				}
				if v := testutil.ToFloat64(e.metrics.WebhookLastDelivery); v != float64(fixedNow.Unix()) {
					t.Errorf("last delivery timestamp = %v, want %v", v, fixedNow.Unix())
				}

				lines := logLines(t, e.logs)
				if len(lines) != 1 {
					t.Fatalf("logged %d lines, want 1: %s", len(lines), e.logs)
				}
				l := lines[0]
				if l["delivery_id"] != id || l["event"] != tt.wantEvent || l["outcome"] != tt.wantOutcome {
					t.Errorf("log = delivery_id %v event %v outcome %v, want %v %v %v",
						l["delivery_id"], l["event"], l["outcome"], id, tt.wantEvent, tt.wantOutcome)
				}
				if tt.wantReason != "" && l["reason"] != tt.wantReason {
					t.Errorf("log reason = %v, want %q", l["reason"], tt.wantReason)
				}
			})
		}
	}
}

// TestQueuedRequest checks the deploy request and the 202 answer for the
// real payload.
func TestQueuedRequest(t *testing.T) {
	real := readFixture(t, realFixture)
	tests := []struct {
		name        string
		cfg         Config
		body        []byte
		targets     []string
		want        deploy.Request
		wantTargets []string
		wantJobs    int
	}{
		{
			name: "two targets", body: real, targets: []string{"www", "www-canary"},
			want: deploy.Request{
				Repository: "ghcr.io/theryangeary/www", Tag: "0e2a89b", Digest: realDigest,
				Trigger: deploy.TriggerWebhook, ID: "id-1", ReceivedAt: fixedNow,
			},
			wantTargets: []string{"www", "www-canary"}, wantJobs: 2,
		},
		{
			name: "configured registry host", cfg: Config{RegistryHost: "Mirror.Example.com:5000"}, body: real, targets: []string{"www"},
			want: deploy.Request{
				Repository: "mirror.example.com:5000/theryangeary/www", Tag: "0e2a89b", Digest: realDigest,
				Trigger: deploy.TriggerWebhook, ID: "id-1", ReceivedAt: fixedNow,
			},
			wantTargets: []string{"www"}, wantJobs: 1,
		},
		{
			name: "mixed case is lowered, tag kept",
			body: edit(t, real, `"name": "www",
    "namespace": "theryangeary"`, `"name": "WWW",
    "namespace": "TheRyanGeary"`,
				`"name": "0e2a89b"`, `"name": "V1.2"`,
				`"package_url": "ghcr.io/theryangeary/www:0e2a89b"`, `"package_url": "ghcr.io/theryangeary/www:v1.2"`),
			targets: []string{"www"},
			want: deploy.Request{
				Repository: "ghcr.io/theryangeary/www", Tag: "V1.2", Digest: realDigest,
				Trigger: deploy.TriggerWebhook, ID: "id-1", ReceivedAt: fixedNow,
			},
			wantTargets: []string{"www"}, wantJobs: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, tt.cfg, tt.targets...)
			rec, got := send(t, e.h, hook{event: "package", id: "id-1", body: tt.body, secret: oldSecret})
			if rec.Code != http.StatusAccepted {
				t.Fatalf("status = %d (%s), want 202", rec.Code, rec.Body)
			}
			reqs := e.sub.accepted()
			// Every body here is the real delivery: it names its source.
			tt.want.SourceRepo, tt.want.Commit = realSourceRepo, realCommit
			if len(reqs) != 1 || reqs[0] != tt.want {
				t.Errorf("submitted %+v, want [%+v]", reqs, tt.want)
			}
			wantImage := tt.want.Repository + ":" + tt.want.Tag
			if got.Status != "queued" || got.Image != wantImage || got.Digest != tt.want.Digest || got.Reason != "" {
				t.Errorf("answer = %+v, want queued %s %s without a reason", got, wantImage, tt.want.Digest)
			}
			if !slices.Equal(got.Targets, tt.wantTargets) || got.Targets == nil || len(got.Jobs) != tt.wantJobs {
				t.Errorf("targets %q jobs %q, want targets %q and %d jobs", got.Targets, got.Jobs, tt.wantTargets, tt.wantJobs)
			}
			if !strings.Contains(rec.Body.String(), `"targets":[`) {
				t.Errorf("answer %s lacks a targets list", rec.Body)
			}
		})
	}
}

// TestNoTarget checks that a delivery for an image no target follows is
// answered and counted as ignored, not queued (nothing will deploy, so a
// "queued but no deploy" alert must not fire), and that it is still
// recorded: its redelivery is a duplicate.
func TestNoTarget(t *testing.T) {
	real := readFixture(t, realFixture)
	e := newEnv(t, Config{}) // no targets
	rec, got := send(t, e.h, hook{event: "package", id: "no-target-1", body: real, secret: newSecret})

	want := `{"status":"ignored","delivery_id":"no-target-1","image":"ghcr.io/theryangeary/www:0e2a89b","reason":"` + reasonNoTarget + `"}` + "\n"
	if rec.Code != http.StatusAccepted || rec.Body.String() != want {
		t.Errorf("answer = %d %s, want 202 %s", rec.Code, rec.Body, want)
	}
	if n := len(e.sub.accepted()); n != 1 {
		t.Errorf("submitted %d requests, want 1 (the queue decides which targets follow an image)", n)
	}
	if v := testutil.ToFloat64(e.metrics.WebhookDeliveries.WithLabelValues("package", metrics.OutcomeIgnored)); v != 1 {
		t.Errorf("deliveries{outcome=%q} = %v, want 1", metrics.OutcomeIgnored, v)
	}
	if v := testutil.ToFloat64(e.metrics.WebhookDeliveries.WithLabelValues("package", metrics.OutcomeQueued)); v != 0 {
		t.Errorf("deliveries{outcome=%q} = %v, want 0", metrics.OutcomeQueued, v)
	}
	lines := logLines(t, e.logs)
	if len(lines) != 1 || lines[0]["outcome"] != metrics.OutcomeIgnored || lines[0]["reason"] != reasonNoTarget ||
		lines[0]["image"] != got.Image || lines[0]["level"] != "INFO" {
		t.Errorf("log = %v, want one INFO line with outcome ignored, the reason and the image", lines)
	}

	// Nothing was queued, so nothing was remembered (or written): a
	// redelivery is looked at afresh, and finds no target again.
	if n := e.deliveries.Len(); n != 0 {
		t.Errorf("remembered %d delivery ids, want none", n)
	}
	rec, got = send(t, e.h, hook{event: "package", id: "no-target-1", body: real, secret: newSecret})
	if rec.Code != http.StatusAccepted || got.Status != "ignored" {
		t.Errorf("redelivery: %d %+v, want 202 ignored", rec.Code, got)
	}
	if n := e.sub.callCount(); n != 2 {
		t.Errorf("after the redelivery: %d submit calls, want 2", n)
	}
}

// TestPing checks the hook id is answered and logged at info, and that a
// hook not subscribed to package events gets a warning.
func TestPing(t *testing.T) {
	tests := []struct {
		fixture     string
		wantWarning bool
	}{
		{"ping.json", false},
		{"ping.with-app_id.json", false},
		{"ping.with-organization.json", true},
	}
	for _, tt := range tests {
		t.Run(tt.fixture, func(t *testing.T) {
			e := newEnv(t, Config{})
			rec, got := send(t, e.h, hook{event: "ping", id: "ping-1", body: readFixture(t, tt.fixture), secret: oldSecret})
			if rec.Code != http.StatusOK || got.Status != "pong" || got.HookID != 109948940 {
				t.Errorf("answer = %d %+v, want 200 pong hook_id 109948940", rec.Code, got)
			}
			if (got.Warning != "") != tt.wantWarning {
				t.Errorf("warning = %q, want warning: %v", got.Warning, tt.wantWarning)
			}
			lines := logLines(t, e.logs)
			wantLevel := map[bool]string{false: "INFO", true: "WARN"}[tt.wantWarning]
			if len(lines) != 1 || lines[0]["hook_id"] != float64(109948940) || lines[0]["level"] != wantLevel {
				t.Errorf("log = %v, want one %s line with hook_id 109948940", lines, wantLevel)
			}
			if e.sub.callCount() != 0 {
				t.Errorf("ping submitted %d requests, want 0", e.sub.callCount())
			}
		})
	}
}

// TestSignatureRejected sends deliveries whose signature must not pass and
// checks the answer is a bare 401 that leaks neither MAC nor secret, in the
// answer or the log, and that nothing of the body is logged.
func TestSignatureRejected(t *testing.T) {
	real := readFixture(t, realFixture)
	jsonMAC := macHex(newSecret, real)
	tests := []struct {
		name string
		k    hook
	}{
		{"unsigned", hook{}},
		{"SHA-1 header only", hook{header: map[string]string{"X-Hub-Signature": "sha1=" + mac1Hex(newSecret, real)}}},
		{"SHA-1 MAC in the SHA-256 header", hook{header: map[string]string{"X-Hub-Signature-256": "sha1=" + mac1Hex(newSecret, real)}}},
		{"sha512 prefix", hook{header: map[string]string{"X-Hub-Signature-256": "sha512=" + jsonMAC}}},
		{"unknown secret", hook{secret: "not-the-secret"}},
		{"tampered body", hook{secret: newSecret, header: map[string]string{"X-Hub-Signature-256": "sha256=" + macHex(newSecret, append([]byte(" "), real...))}}},
		{"truncated MAC", hook{header: map[string]string{"X-Hub-Signature-256": "sha256=" + jsonMAC[:62]}}},
		{"not hex", hook{header: map[string]string{"X-Hub-Signature-256": "sha256=" + strings.Repeat("zz", 32)}}},
		{"empty MAC", hook{header: map[string]string{"X-Hub-Signature-256": "sha256="}}},
		{"form body signed as JSON", hook{form: true, header: map[string]string{"X-Hub-Signature-256": "sha256=" + jsonMAC}}},
		{"signature of the old secret over another body", hook{header: map[string]string{"X-Hub-Signature-256": "sha256=" + macHex(oldSecret, []byte("{}"))}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, Config{}, "www")
			k := tt.k
			k.event, k.id, k.body = "package", "a7e3f1c0-6b8d-11f0-9000-0000000000aa", real
			r := newRequest(k)
			rec := httptest.NewRecorder()
			e.h.ServeHTTP(rec, r)

			if rec.Code != http.StatusUnauthorized || rec.Body.String() != `{"error":"invalid signature"}`+"\n" {
				t.Errorf("answer = %d %q, want 401 {\"error\":\"invalid signature\"}", rec.Code, rec.Body)
			}
			wire, _ := k.wire()
			secrets := []string{oldSecret, newSecret, "not-the-secret"}
			macs := []string{macHex(oldSecret, wire), macHex(newSecret, wire), jsonMAC, mac1Hex(newSecret, wire)}
			if sent := r.Header.Get("X-Hub-Signature-256"); len(sent) > len("sha256=") {
				macs = append(macs, strings.TrimPrefix(sent, "sha256="))
			}
			if l := leaks(rec.Body.String(), append(secrets, macs...)...); l != nil {
				t.Errorf("answer %q leaks %q", rec.Body, l)
			}
			logs := e.logs.String()
			if l := leaks(logs, append(append(secrets, macs...), "theryangeary", "0e2a89b", "CONTAINER")...); l != nil {
				t.Errorf("log %q leaks %q", logs, l)
			}
			if e.sub.callCount() != 0 {
				t.Errorf("rejected delivery was submitted")
			}
			if v := testutil.ToFloat64(e.metrics.WebhookDeliveries.WithLabelValues("package", metrics.OutcomeInvalidSignature)); v != 1 {
				t.Errorf("invalid_signature count = %v, want 1", v)
			}
			if v := testutil.ToFloat64(e.metrics.WebhookLastDelivery); v != 0 {
				t.Errorf("last delivery timestamp = %v after a rejected delivery, want 0", v)
			}
			lines := logLines(t, e.logs)
			if len(lines) != 1 || lines[0]["level"] != "WARN" || lines[0]["outcome"] != metrics.OutcomeInvalidSignature {
				t.Errorf("log = %v, want one WARN invalid_signature line", lines)
			}
		})
	}
}

// TestSecretRotation checks that each configured secret is accepted, in
// both content types, and that the error of a failed check names no secret.
func TestSecretRotation(t *testing.T) {
	real := readFixture(t, realFixture)
	e := newEnv(t, Config{}, "www")
	for i, secret := range []string{oldSecret, newSecret} {
		for _, form := range []bool{false, true} {
			id := fmt.Sprintf("rotation-%d-%v", i, form)
			rec, got := send(t, e.h, hook{event: "package", id: id, body: real, form: form, secret: secret})
			if rec.Code != http.StatusAccepted || got.Status != "queued" {
				t.Errorf("secret %d form=%v: answer %d %+v, want 202 queued", i, form, rec.Code, got)
			}
		}
	}
	if n := len(e.sub.accepted()); n != 4 {
		t.Errorf("submitted %d, want 4", n)
	}

	// Only the new secret configured: the old one is refused.
	e = newEnv(t, Config{Secrets: [][]byte{[]byte(newSecret)}}, "www")
	rec, _ := send(t, e.h, hook{event: "package", id: "rotated-out", body: real, secret: oldSecret})
	if rec.Code != http.StatusUnauthorized {
		t.Errorf("old secret after rotation: status %d, want 401", rec.Code)
	}
	err := verifySignature(newRequest(hook{body: real, secret: oldSecret}).Header, real, [][]byte{[]byte(newSecret)})
	if err == nil {
		t.Fatal("verifySignature with the retired secret = nil, want an error")
	}
	if l := leaks(err.Error(), oldSecret, newSecret, macHex(oldSecret, real), macHex(newSecret, real)); l != nil {
		t.Errorf("verifySignature error %q leaks %q", err, l)
	}
}

// TestGitHubDocsVector checks the test vector of GitHub's "Validating
// webhook deliveries".
func TestGitHubDocsVector(t *testing.T) {
	const (
		secret = "It's a Secret to Everybody"
		body   = "Hello, World!"
		sig    = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
	)
	h := http.Header{}
	h.Set("X-Hub-Signature-256", sig)
	if err := verifySignature(h, []byte(body), [][]byte{[]byte("another secret"), []byte(secret)}); err != nil {
		t.Errorf("verifySignature(docs vector) = %v, want nil", err)
	}
	err := verifySignature(h, []byte(body+"!"), [][]byte{[]byte(secret)})
	if err == nil {
		t.Fatal("verifySignature(docs vector, changed body) = nil, want an error")
	}
	if l := leaks(err.Error(), secret, strings.TrimPrefix(sig, "sha256=")); l != nil {
		t.Errorf("error %q leaks %q", err, l)
	}

	// Through the handler: the signature passes, the body is no JSON.
	e := newEnv(t, Config{Secrets: [][]byte{[]byte(secret)}})
	rec, got := send(t, e.h, hook{event: "ping", id: "docs-vector", body: []byte(body), header: map[string]string{"X-Hub-Signature-256": sig}})
	if rec.Code != http.StatusBadRequest || got.Error != errMalformed.Error() {
		t.Errorf("answer = %d %q, want 400 %q", rec.Code, rec.Body, errMalformed)
	}
	if l := leaks(rec.Body.String()+e.logs.String(), secret, strings.TrimPrefix(sig, "sha256="), body); l != nil {
		t.Errorf("answer or log leaks %q", l)
	}
}

// TestBadRequests covers the other error answers: each is short, echoes
// nothing of the payload, and counts.
func TestBadRequests(t *testing.T) {
	real := readFixture(t, realFixture)
	tests := []struct {
		name        string
		k           hook
		maxBody     int64
		unknownLen  bool
		wantCode    int
		wantError   string
		wantOutcome string
	}{
		{
			name: "truncated JSON", k: hook{event: "package", body: real[:len(real)/2]},
			wantCode: 400, wantError: errMalformed.Error(), wantOutcome: metrics.OutcomeBadRequest,
		},
		{
			name: "truncated JSON as form", k: hook{event: "package", body: real[:len(real)/2], form: true},
			wantCode: 400, wantError: errMalformed.Error(), wantOutcome: metrics.OutcomeBadRequest,
		},
		{
			name: "JSON array", k: hook{event: "registry_package", body: []byte(`["theryangeary"]`)},
			wantCode: 400, wantError: errMalformed.Error(), wantOutcome: metrics.OutcomeBadRequest,
		},
		{
			name: "no package object", k: hook{event: "package", body: []byte(`{"action":"published","theryangeary":1}`)},
			wantCode: 400, wantError: errMalformed.Error(), wantOutcome: metrics.OutcomeBadRequest,
		},
		{
			name: "wrong field type", k: hook{event: "package", body: []byte(`{"action":"published","package":{"name":42}}`)},
			wantCode: 400, wantError: errMalformed.Error(), wantOutcome: metrics.OutcomeBadRequest,
		},
		{
			name: "malformed ping", k: hook{event: "ping", body: []byte(`{"hook_id":"theryangeary"}`)},
			wantCode: 400, wantError: errMalformed.Error(), wantOutcome: metrics.OutcomeBadRequest,
		},
		{
			name: "bad form encoding", k: hook{event: "package", body: real,
				header: map[string]string{"Content-Type": "application/x-www-form-urlencoded"}},
			wantCode: 400, wantError: errMalformed.Error(), wantOutcome: metrics.OutcomeBadRequest,
		},
		{
			name: "missing delivery id", k: hook{event: "package", body: real, header: map[string]string{"X-GitHub-Delivery": ""}},
			wantCode: 400, wantError: errDeliveryID.Error(), wantOutcome: metrics.OutcomeBadRequest,
		},
		{
			name: "delivery id with spaces", k: hook{event: "package", body: real, header: map[string]string{"X-GitHub-Delivery": "a b"}},
			wantCode: 400, wantError: errDeliveryID.Error(), wantOutcome: metrics.OutcomeBadRequest,
		},
		{
			name: "overlong delivery id", k: hook{event: "package", body: real, header: map[string]string{"X-GitHub-Delivery": strings.Repeat("a", 101)}},
			wantCode: 400, wantError: errDeliveryID.Error(), wantOutcome: metrics.OutcomeBadRequest,
		},
		{
			name: "text/plain", k: hook{event: "package", body: real, header: map[string]string{"Content-Type": "text/plain"}},
			wantCode: 415, wantError: errContentType.Error(), wantOutcome: metrics.OutcomeBadRequest,
		},
		{
			name: "GET", k: hook{event: "package", body: real, method: http.MethodGet},
			wantCode: 405, wantError: errMethod.Error(), wantOutcome: metrics.OutcomeBadRequest,
		},
		{
			name: "too large, announced", k: hook{event: "package", body: real}, maxBody: 4096,
			wantCode: 413, wantError: errTooLarge.Error(), wantOutcome: metrics.OutcomeTooLarge,
		},
		{
			name: "too large, chunked", k: hook{event: "package", body: real}, maxBody: 4096, unknownLen: true,
			wantCode: 413, wantError: errTooLarge.Error(), wantOutcome: metrics.OutcomeTooLarge,
		},
		{
			name: "too large as form", k: hook{event: "package", body: real, form: true}, maxBody: int64(len(real)),
			wantCode: 413, wantError: errTooLarge.Error(), wantOutcome: metrics.OutcomeTooLarge,
		},
		{
			name: "too large and unsigned", k: hook{event: "package", body: real, header: map[string]string{"X-Hub-Signature-256": ""}}, maxBody: 1,
			wantCode: 413, wantError: errTooLarge.Error(), wantOutcome: metrics.OutcomeTooLarge,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, Config{MaxBodyBytes: tt.maxBody}, "www")
			k := tt.k
			k.secret = newSecret
			if k.id == "" {
				k.id = "bad-request-1"
			}
			r := newRequest(k)
			if tt.unknownLen {
				r.ContentLength = -1
			}
			rec := httptest.NewRecorder()
			e.h.ServeHTTP(rec, r)
			want := `{"error":"` + tt.wantError + `"}` + "\n"
			if rec.Code != tt.wantCode || rec.Body.String() != want {
				t.Errorf("answer = %d %q, want %d %q", rec.Code, rec.Body, tt.wantCode, want)
			}
			if l := leaks(rec.Body.String(), "theryangeary", newSecret, macHex(newSecret, k.body)); l != nil {
				t.Errorf("answer leaks %q", l)
			}
			if e.sub.callCount() != 0 {
				t.Errorf("bad request was submitted")
			}
			event := eventLabel(k.event)
			if v := testutil.ToFloat64(e.metrics.WebhookDeliveries.WithLabelValues(event, tt.wantOutcome)); v != 1 {
				t.Errorf("deliveries{event=%q,outcome=%q} = %v, want 1", event, tt.wantOutcome, v)
			}
			if lines := logLines(t, e.logs); len(lines) != 1 || lines[0]["level"] != "WARN" {
				t.Errorf("log = %v, want one WARN line", lines)
			}
		})
	}
}

// TestBodyLimitBoundary checks a body of exactly the limit is accepted.
func TestBodyLimitBoundary(t *testing.T) {
	real := readFixture(t, realFixture)
	for _, unknownLen := range []bool{false, true} {
		e := newEnv(t, Config{MaxBodyBytes: int64(len(real))}, "www")
		r := newRequest(hook{event: "package", id: "limit", body: real, secret: oldSecret})
		if unknownLen {
			r.ContentLength = -1
		}
		rec := httptest.NewRecorder()
		e.h.ServeHTTP(rec, r)
		if rec.Code != http.StatusAccepted {
			t.Errorf("body of exactly MaxBodyBytes (unknown length %v): status %d (%s), want 202", unknownLen, rec.Code, rec.Body)
		}
	}
}

// TestDuplicates checks a redelivery is answered, not resubmitted, and that
// a delivery refused with 503 can be redelivered.
func TestDuplicates(t *testing.T) {
	real := readFixture(t, realFixture)
	e := newEnv(t, Config{}, "www")
	steps := []struct {
		name      string
		id        string
		queueFull bool
		wantCode  int
		wantState string // status or error
		wantCalls int
	}{
		{"first delivery", "dup-a", false, 202, "queued", 1},
		{"redelivery", "dup-a", false, 200, "duplicate", 1},
		{"redelivery again", "dup-a", false, 200, "duplicate", 1},
		{"another delivery of the same image", "dup-b", false, 202, "queued", 2},
		{"queue full", "dup-c", true, 503, "deploy queue is full", 3},
		{"redelivery after 503", "dup-c", false, 202, "queued", 4},
		{"redelivery after that", "dup-c", false, 200, "duplicate", 4},
	}
	for _, s := range steps {
		if s.queueFull {
			e.sub.setErr(fmt.Errorf("submit: %w", deploy.ErrQueueFull))
		} else {
			e.sub.setErr(nil)
		}
		rec, got := send(t, e.h, hook{event: "package", id: s.id, body: real, secret: newSecret})
		state := got.Status
		if state == "" {
			state = got.Error
		}
		if rec.Code != s.wantCode || state != s.wantState || e.sub.callCount() != s.wantCalls {
			t.Errorf("%s: answer %d %q after %d submit calls, want %d %q after %d",
				s.name, rec.Code, state, e.sub.callCount(), s.wantCode, s.wantState, s.wantCalls)
		}
	}
	for outcome, want := range map[string]float64{
		metrics.OutcomeQueued: 3, metrics.OutcomeDuplicate: 3, metrics.OutcomeQueueFull: 1,
	} {
		if v := testutil.ToFloat64(e.metrics.WebhookDeliveries.WithLabelValues("package", outcome)); v != want {
			t.Errorf("deliveries{outcome=%q} = %v, want %v", outcome, v, want)
		}
	}
}

// TestConcurrentDuplicate sends a redelivery while the first delivery of the
// id is being submitted: it is answered as a duplicate, submitted once.
func TestConcurrentDuplicate(t *testing.T) {
	real := readFixture(t, realFixture)
	e := newEnv(t, Config{}, "www")
	e.sub.entered = make(chan struct{})
	e.sub.block = make(chan struct{})

	var wg sync.WaitGroup
	var first *httptest.ResponseRecorder
	wg.Go(func() {
		first = httptest.NewRecorder()
		e.h.ServeHTTP(first, newRequest(hook{event: "package", id: "concurrent", body: real, secret: newSecret}))
	})
	<-e.sub.entered // the first delivery is inside Submit
	rec, got := send(t, e.h, hook{event: "package", id: "concurrent", body: real, secret: newSecret})
	close(e.sub.block)
	wg.Wait()

	if rec.Code != http.StatusOK || got.Status != "duplicate" {
		t.Errorf("concurrent redelivery: %d %+v, want 200 duplicate", rec.Code, got)
	}
	if first.Code != http.StatusAccepted {
		t.Errorf("first delivery: %d %s, want 202", first.Code, first.Body)
	}
	if n := e.sub.callCount(); n != 1 {
		t.Errorf("submitted %d times, want 1", n)
	}
}

// failingDeliveries is a store that cannot be read or written.
type failingDeliveries struct{}

func (failingDeliveries) Seen(context.Context, string) (bool, error) {
	return false, errors.New("state.db: input/output error")
}

func (failingDeliveries) Record(context.Context, string, time.Time) error {
	return errors.New("state.db: input/output error")
}

// TestDeliveriesStoreFailure checks a broken dedupe store does not lose the
// deploy, and is logged as a warning.
func TestDeliveriesStoreFailure(t *testing.T) {
	e := newEnv(t, Config{}, "www")
	h, err := NewHandler(Config{Secrets: [][]byte{[]byte(oldSecret)}}, e.sub, failingDeliveries{}, e.metrics, e.h.log)
	if err != nil {
		t.Fatal(err)
	}
	rec, got := send(t, h, hook{event: "package", id: "store-down", body: readFixture(t, realFixture), secret: oldSecret})
	if rec.Code != http.StatusAccepted || got.Status != "queued" {
		t.Errorf("answer = %d %+v, want 202 queued", rec.Code, got)
	}
	lines := logLines(t, e.logs)
	if len(lines) != 1 || lines[0]["level"] != "WARN" || lines[0]["dedupe_err"] == nil || lines[0]["record_err"] == nil {
		t.Errorf("log = %v, want one WARN line with dedupe_err and record_err", lines)
	}
}

// TestSubmitFailure checks an unexpected submit error is a 500 whose answer
// names no internals.
func TestSubmitFailure(t *testing.T) {
	e := newEnv(t, Config{}, "www")
	e.sub.setErr(errors.New("open /var/lib/hookd/state.db: permission denied"))
	rec, got := send(t, e.h, hook{event: "package", id: "submit-fails", body: readFixture(t, realFixture), secret: oldSecret})
	if rec.Code != http.StatusInternalServerError || got.Error != "internal error" {
		t.Errorf("answer = %d %q, want 500 internal error", rec.Code, rec.Body)
	}
	if strings.Contains(rec.Body.String(), "/var/lib") {
		t.Errorf("answer %q leaks the error", rec.Body)
	}
	if lines := logLines(t, e.logs); len(lines) != 1 || lines[0]["level"] != "ERROR" || !strings.Contains(fmt.Sprint(lines[0]["err"]), "permission denied") {
		t.Errorf("log = %v, want one ERROR line with the error", lines)
	}
	// The delivery was not recorded, so it can be redelivered.
	e.sub.setErr(nil)
	if rec, _ := send(t, e.h, hook{event: "package", id: "submit-fails", body: readFixture(t, realFixture), secret: oldSecret}); rec.Code != http.StatusAccepted {
		t.Errorf("redelivery after 500: %d, want 202", rec.Code)
	}
}

// TestCardinality sends 10,000 signed deliveries for 10,000 distinct
// unknown packages and distinct event names: no series is added, and the
// dedupe memory stays bounded.
func TestCardinality(t *testing.T) {
	real := readFixture(t, realFixture)
	e := newEnv(t, Config{})
	e.deliveries = NewMemoryDeliveries(500)
	e.h.deliveries = e.deliveries

	deliver := func(i int) {
		name := fmt.Sprintf("pkg-%05d", i)
		body := edit(t, real,
			`"name": "www",
    "namespace"`, `"name": "`+name+`",
    "namespace"`,
			`"package_url": "ghcr.io/theryangeary/www:0e2a89b"`, `"package_url": "ghcr.io/theryangeary/`+name+`:0e2a89b"`)
		for _, k := range []struct {
			hook
			want int
		}{
			{hook{event: []string{"package", "registry_package"}[i%2], id: "card-" + name, body: body, secret: newSecret}, 202},
			{hook{event: "event-" + name, id: "card-other-" + name, body: body, secret: newSecret}, 202},
			{hook{event: "evil-" + name, id: "card-evil-" + name, body: body}, 401},
		} {
			rec := httptest.NewRecorder()
			e.h.ServeHTTP(rec, newRequest(k.hook))
			if rec.Code != k.want {
				t.Fatalf("delivery %d, event %q: %d %s, want %d", i, k.event, rec.Code, rec.Body, k.want)
			}
		}
	}
	for i := range 2 {
		deliver(i)
	}
	before := testutil.CollectAndCount(e.metrics.WebhookDeliveries)
	total, err := testutil.GatherAndCount(e.reg)
	if err != nil {
		t.Fatal(err)
	}
	for i := 2; i < 10000; i++ {
		deliver(i)
	}
	// No target follows these images: (package|registry_package, ignored),
	// (other, ignored), (other, invalid_signature).
	if after := testutil.CollectAndCount(e.metrics.WebhookDeliveries); after != before || before != 4 {
		t.Errorf("deliveries series: %d before, %d after, want 4 both times", before, after)
	}
	// The Go and process collectors' series are fixed too, so the registry's total must not move.
	if after, err := testutil.GatherAndCount(e.reg); err != nil || after != total {
		t.Errorf("registry series: %d before, %d after (%v), want equal", total, after, err)
	}
	if n := len(e.sub.accepted()); n != 10000 {
		t.Errorf("submitted %d, want 10000", n)
	}
	if n := e.deliveries.Len(); n != 0 {
		t.Errorf("remembered %d delivery ids, want none (no delivery queued anything)", n)
	}
}

// TestNewHandlerRefuses checks the configuration errors.
func TestNewHandlerRefuses(t *testing.T) {
	sub, del := &fakeSubmitter{}, NewMemoryDeliveries(0)
	ok := [][]byte{[]byte(oldSecret)}
	tests := []struct {
		name string
		cfg  Config
		sub  Submitter
		del  Deliveries
		want string
	}{
		{"no secret", Config{}, sub, del, "webhook secret is required"},
		{"empty secret list", Config{Secrets: [][]byte{}}, sub, del, "webhook secret is required"},
		{"an empty secret among others", Config{Secrets: [][]byte{[]byte(oldSecret), nil}}, sub, del, "webhook secret 2 of 2 is empty"},
		{"negative body limit", Config{Secrets: ok, MaxBodyBytes: -1}, sub, del, "webhook body limit -1 is negative"},
		{"registry host without a dot", Config{Secrets: ok, RegistryHost: "ghcr"}, sub, del, `registry host "ghcr" is not a registry host name`},
		{"registry host with a path", Config{Secrets: ok, RegistryHost: "ghcr.io/x"}, sub, del, "is not a registry host name"},
		{"nil submitter", Config{Secrets: ok}, nil, del, "webhook submitter is nil"},
		{"nil deliveries", Config{Secrets: ok}, sub, nil, "webhook deliveries store is nil"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, err := NewHandler(tt.cfg, tt.sub, tt.del, nil, nil)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("NewHandler() = %v, %v; want error containing %q", h, err, tt.want)
			}
			if l := leaks(err.Error(), oldSecret); l != nil {
				t.Errorf("error %q leaks the secret", err)
			}
		})
	}

	// Every problem is listed.
	_, err := NewHandler(Config{MaxBodyBytes: -5}, nil, nil, nil, nil)
	for _, want := range []string{"secret is required", "body limit", "submitter is nil", "deliveries store is nil"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("NewHandler(everything wrong) = %v, want it to mention %q", err, want)
		}
	}

	// The handler keeps its own copy of the secrets.
	secret := []byte(oldSecret)
	h, err := NewHandler(Config{Secrets: [][]byte{secret}}, sub, del, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	copy(secret, "xxxxxxxx")
	rec, _ := send(t, h, hook{event: "package", id: "copy", body: readFixture(t, realFixture), secret: oldSecret})
	if rec.Code != http.StatusAccepted {
		t.Errorf("after the caller changed its secret slice: %d, want 202", rec.Code)
	}
}

// BenchmarkWebhook measures the full path through the http.Handler: read,
// verify, parse, dedupe, submit, answer, count, log (to a discarding JSON
// handler), for the real 11 KB payload.
func BenchmarkWebhook(b *testing.B) {
	real, err := os.ReadFile(filepath.Join("testdata", realFixture))
	if err != nil {
		b.Fatal(err)
	}
	logger := slog.New(slog.NewJSONHandler(io.Discard, nil))
	h, err := NewHandler(Config{Secrets: [][]byte{[]byte(oldSecret), []byte(newSecret)}},
		noopSubmitter{}, NewMemoryDeliveries(0), metrics.Discard(), logger)
	if err != nil {
		b.Fatal(err)
	}
	sig := "sha256=" + macHex(newSecret, real)
	b.SetBytes(int64(len(real)))
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		r := httptest.NewRequest(http.MethodPost, "/hooks/github", bytes.NewReader(real))
		r.Header.Set("Content-Type", "application/json")
		r.Header.Set("X-GitHub-Event", "package")
		r.Header.Set("X-GitHub-Delivery", "bench-"+strconv.Itoa(i))
		r.Header.Set("X-Hub-Signature-256", sig)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		if rec.Code != http.StatusAccepted {
			b.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
	}
}

type noopSubmitter struct{}

func (noopSubmitter) Submit(_ context.Context, req deploy.Request) ([]deploy.Job, error) {
	return []deploy.Job{{ID: "job", Target: "www", Request: req, Status: deploy.StatusQueued}}, nil
}

// BenchmarkVerify is the signature check alone, when the second of two
// secrets matches (the worst case during a rotation).
func BenchmarkVerify(b *testing.B) {
	real, err := os.ReadFile(filepath.Join("testdata", realFixture))
	if err != nil {
		b.Fatal(err)
	}
	h := http.Header{}
	h.Set("X-Hub-Signature-256", "sha256="+macHex(newSecret, real))
	secrets := [][]byte{[]byte(oldSecret), []byte(newSecret)}
	b.SetBytes(int64(len(real)))
	b.ReportAllocs()
	for b.Loop() {
		if err := verifySignature(h, real, secrets); err != nil {
			b.Fatal(err)
		}
	}
}

// TestSuccessiveDeliveries checks that nothing of one delivery carries into
// the next on the same handler, whether or not the length is announced.
func TestSuccessiveDeliveries(t *testing.T) {
	real := readFixture(t, realFixture)
	other := edit(t, real, `"name": "www",
    "namespace"`, `"name": "w2",
    "namespace"`, `"package_url": "ghcr.io/theryangeary/www:0e2a89b"`, `"package_url": "ghcr.io/theryangeary/w2:0e2a89b"`)
	e := newEnv(t, Config{}, "www")
	steps := []struct {
		event, body string
		wantCode    int
		wantImage   string
	}{
		{"package", string(real), 202, "ghcr.io/theryangeary/www:0e2a89b"},
		{"ping", string(readFixture(t, "ping.with-organization.json")), 200, ""},
		{"package", `{"action":"published"}`, 400, ""},
		{"package", string(other), 202, "ghcr.io/theryangeary/w2:0e2a89b"},
		{"package", string(real[:len(real)-1]), 400, ""},
		{"package", string(real), 202, "ghcr.io/theryangeary/www:0e2a89b"},
	}
	for i, s := range steps {
		for _, unknownLen := range []bool{false, true} {
			r := newRequest(hook{event: s.event, id: fmt.Sprintf("reuse-%d-%v", i, unknownLen), body: []byte(s.body), secret: newSecret})
			if unknownLen {
				r.ContentLength = -1
			}
			rec := httptest.NewRecorder()
			e.h.ServeHTTP(rec, r)
			if rec.Code != s.wantCode || s.wantImage != "" && !strings.Contains(rec.Body.String(), `"image":"`+s.wantImage+`"`) {
				t.Errorf("step %d (unknown length %v): %d %s, want %d image %q", i, unknownLen, rec.Code, rec.Body, s.wantCode, s.wantImage)
			}
		}
	}
}

// TestDeepNesting sends correctly signed deliveries whose JSON nests arrays
// a million and ten million deep, under the largest body limit the
// configuration allows (25 MiB): each is answered 400, and the handler is
// still there to queue the next delivery. A decoder that recurses once per
// level overflows the goroutine stack somewhere past five million levels (a
// 12 MB body), a fatal error that no recover catches: the whole process
// dies. Below that it still grows the stack by hundreds of megabytes.
func TestDeepNesting(t *testing.T) {
	real := readFixture(t, realFixture)
	nest := func(depth int) string { return strings.Repeat("[", depth) + strings.Repeat("]", depth) }
	inField := func(depth int) []byte {
		return edit(t, real, `"action": "published",`, `"action": "published", "deep": `+nest(depth)+`,`)
	}
	const maxBody = 25 << 20
	tests := []struct {
		name  string
		event string
		body  []byte
		form  bool
	}{
		{"1e6 in a field hookd skips", "package", inField(1_000_000), false},
		{"1e6 in a field hookd skips, as form", "package", inField(1_000_000), true},
		{"1e6 as the package object", "registry_package", []byte(`{"action":"published","registry_package":` + nest(1_000_000) + `}`), false},
		{"1e6 as the whole body", "package", []byte(nest(1_000_000)), false},
		{"1e6 in a ping", "ping", []byte(`{"hook_id":1,"hook":` + nest(1_000_000) + `}`), false},
		{"1e7 in a field hookd skips", "package", inField(10_000_000), false},
	}
	e := newEnv(t, Config{MaxBodyBytes: maxBody}, "www")
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if wire, _ := (hook{body: tt.body, form: tt.form}).wire(); len(wire) > maxBody {
				t.Fatalf("body of %d bytes does not fit the limit", len(wire))
			}
			rec, got := send(t, e.h, hook{event: tt.event, id: fmt.Sprintf("deep-%d", i), body: tt.body, form: tt.form, secret: newSecret})
			if rec.Code != http.StatusBadRequest || got.Error != errMalformed.Error() {
				t.Errorf("answer = %d %.200q, want 400 %q", rec.Code, rec.Body, errMalformed)
			}
		})
	}
	if n := e.sub.callCount(); n != 0 {
		t.Errorf("submitted %d requests, want 0", n)
	}
	rec, got := send(t, e.h, hook{event: "package", id: "after-deep", body: real, secret: newSecret})
	if rec.Code != http.StatusAccepted || got.Status != "queued" {
		t.Errorf("delivery after the deep ones: %d %+v, want 202 queued", rec.Code, got)
	}
}
