package containers

import (
	"strings"
	"testing"
	"time"

	"github.com/and3rn3t/hookd/internal/deploy"
)

func TestParseProbe(t *testing.T) {
	tests := []struct {
		labels map[string]string
		want   *probe // nil with wantErr "" means no probe
		// wantErr is in the error; it names the label at fault.
		wantErr string
	}{
		{labels: map[string]string{}},
		{labels: map[string]string{deploy.LabelProbe: " "}},
		{labels: map[string]string{deploy.LabelProbe: "http://:8080/healthz"},
			want: &probe{label: "http://:8080/healthz", port: "8080", path: "/healthz", interval: time.Second, successes: 2}},
		{labels: map[string]string{deploy.LabelProbe: "http://:80", deploy.LabelProbeExpect: "204",
			deploy.LabelProbeInterval: "250ms", deploy.LabelProbeSuccesses: "5"},
			want: &probe{label: "http://:80", port: "80", path: "/", expect: 204, interval: 250 * time.Millisecond, successes: 5}},
		{labels: map[string]string{deploy.LabelProbe: "http://:8080/ready?deep=1"},
			want: &probe{label: "http://:8080/ready?deep=1", port: "8080", path: "/ready?deep=1", interval: time.Second, successes: 2}},
		{labels: map[string]string{deploy.LabelProbe: "tcp://:25565"},
			want: &probe{label: "tcp://:25565", tcp: true, port: "25565", interval: time.Second, successes: 2}},
		{labels: map[string]string{deploy.LabelProbe: "https://:8443/"}, wantErr: "hookd.probe=\"https://:8443/\": the scheme must be http or tcp"},
		{labels: map[string]string{deploy.LabelProbe: "http://app:8080/healthz"}, wantErr: "leave the host out"},
		{labels: map[string]string{deploy.LabelProbe: "http:///healthz"}, wantErr: "a port is required"},
		{labels: map[string]string{deploy.LabelProbe: "tcp://:99999"}, wantErr: "a port is required"},
		{labels: map[string]string{deploy.LabelProbe: "tcp://:25565/x"}, wantErr: "a tcp probe takes no path"},
		{labels: map[string]string{deploy.LabelProbe: "8080"}, wantErr: "want http://:PORT/PATH or tcp://:PORT"},
		{labels: map[string]string{deploy.LabelProbe: "tcp://:25565", deploy.LabelProbeExpect: "200"}, wantErr: "hookd.probe-expect=\"200\""},
		{labels: map[string]string{deploy.LabelProbe: "http://:80", deploy.LabelProbeExpect: "ok"}, wantErr: "hookd.probe-expect"},
		{labels: map[string]string{deploy.LabelProbe: "http://:80", deploy.LabelProbeInterval: "1"}, wantErr: "hookd.probe-interval=\"1\""},
		{labels: map[string]string{deploy.LabelProbe: "http://:80", deploy.LabelProbeSuccesses: "0"}, wantErr: "hookd.probe-successes=\"0\""},
	}
	for _, tt := range tests {
		got, err := parseProbe(tt.labels)
		switch {
		case tt.wantErr != "":
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("parseProbe(%v) error = %v, want it to contain %q", tt.labels, err, tt.wantErr)
			}
		case err != nil:
			t.Errorf("parseProbe(%v) error = %v", tt.labels, err)
		case (got == nil) != (tt.want == nil) || got != nil && *got != *tt.want:
			t.Errorf("parseProbe(%v) = %+v, want %+v", tt.labels, got, tt.want)
		}
	}
}
