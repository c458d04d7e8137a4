package main

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"
)

// TestNotifyURLsKeepTheirCommas: notification URLs are separated by white
// space, as watchtower takes them, never by commas, which they hold.
func TestNotifyURLsKeepTheirCommas(t *testing.T) {
	const ntfy, telegram = "ntfy://ntfy.sh/deploys?tags=rocket,pi", "telegram://110201543:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw@telegram?chats=@a,@b"
	want := urlList{ntfy, telegram}
	yamlFile := writeFile(t, "hookd.yaml", "notify_urls:\n  - "+ntfy+"\n  - \""+telegram+"\"\n")
	listFile := writeFile(t, "urls", ntfy+"\n\n"+telegram+"\n")
	tests := []struct {
		name string
		args []string
		env  map[string]string
	}{
		{"environment, a space apart", nil, map[string]string{"HOOKD_NOTIFY_URLS": ntfy + "  " + telegram}},
		{"environment, a line apart", nil, map[string]string{"HOOKD_NOTIFY_URLS": ntfy + "\n" + telegram}},
		{"file, one a line", nil, map[string]string{"HOOKD_NOTIFY_URLS_FILE": listFile}},
		{"YAML list", []string{"--config", yamlFile}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := map[string]string{"HOOKD_WEBHOOK_SECRET": "0123456789"}
			for k, v := range tt.env {
				e[k] = v
			}
			c, err := loadConfig(tt.args, env(e), &bytes.Buffer{})
			if err != nil {
				t.Fatalf("loadConfig: %v", err)
			}
			if !reflect.DeepEqual(c.NotifyURLs, want) {
				t.Errorf("notify_urls = %q, want %q", c.NotifyURLs, want)
			}
		})
	}
}

func TestReportingConfigErrors(t *testing.T) {
	const secret = "s3cr3tT0kenValue"
	goodTemplate := writeFile(t, "ok.tmpl", "{{range .Jobs}}{{.Target}}{{end}}")
	badTemplate := writeFile(t, "bad.tmpl", "{{.NoSuchField}}")
	tests := []struct {
		name string
		env  map[string]string
		want string // in the error; "" for none
	}{
		{"checks need a token", map[string]string{"HOOKD_GITHUB_REQUIRE_CHECKS": "true"}, "github_require_checks: needs github_token"},
		{"API URL", map[string]string{"HOOKD_GITHUB_API_URL": "ftp://example.net"}, "github_api_url"},
		{"level", map[string]string{"HOOKD_NOTIFY_LEVEL": "warn"}, `notify_level: must be error, info or debug, got "warn"`},
		{"unknown service", map[string]string{"HOOKD_NOTIFY_URLS": "ntfy://ntfy.sh/ok nosuch://" + secret + "@host"}, "notify_urls: notify_urls[1] (nosuch)"},
		{"both templates", map[string]string{"HOOKD_NOTIFY_TEMPLATE": "x", "HOOKD_NOTIFY_TEMPLATE_FILE": goodTemplate}, "not both"},
		{"template that cannot run", map[string]string{"HOOKD_NOTIFY_TEMPLATE_FILE": badTemplate}, "notify_template:"},
		{"template file", map[string]string{"HOOKD_NOTIFY_TEMPLATE_FILE": goodTemplate}, ""},
		{"all set", map[string]string{"HOOKD_GITHUB_TOKEN": secret, "HOOKD_GITHUB_REQUIRE_CHECKS": "true",
			"HOOKD_GITHUB_API_URL": "https://ghe.example.net/api/v3/", "HOOKD_NOTIFY_URLS": "ntfy://ntfy.sh/" + secret, "HOOKD_NOTIFY_LEVEL": "error"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := map[string]string{"HOOKD_WEBHOOK_SECRET": "0123456789"}
			for k, v := range tt.env {
				e[k] = v
			}
			c, err := loadConfig(nil, env(e), &bytes.Buffer{})
			if tt.want == "" {
				if err != nil {
					t.Fatalf("loadConfig: %v", err)
				}
				if tt.env["HOOKD_NOTIFY_TEMPLATE_FILE"] != "" && c.NotifyTemplate != "{{range .Jobs}}{{.Target}}{{end}}" {
					t.Errorf("notify_template = %q, want the file's content", c.NotifyTemplate)
				}
				return
			}
			var cfgErr *configError
			if !errors.As(err, &cfgErr) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("loadConfig error = %v, want a configuration error with %q", err, tt.want)
			}
			if strings.Contains(err.Error(), secret) {
				t.Errorf("error %q holds the secret", err)
			}
		})
	}
}
