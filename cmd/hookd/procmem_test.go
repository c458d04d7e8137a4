package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// procMemory is a process's memory as the kernel reports it, in KiB.
//
// RssAnon (heap, stacks, runtime metadata) is private: no other process can
// use it and the kernel cannot drop it, so it is what hookd costs the host.
// RssFile is pages of the binary, which stay in the page cache whether hookd
// maps them or not and are the first the kernel reclaims. VmRSS is their
// sum. Pss splits shared pages among the processes mapping them.
type procMemory struct {
	VmRSS, RssAnon, RssFile int64 // /proc/<pid>/status
	Pss                     int64 // /proc/<pid>/smaps_rollup
	PssAnon                 int64 // smaps_rollup's Pss_Anon; -1 where the kernel does not report it
}

func (m procMemory) String() string {
	mib := func(kib int64) string { return fmt.Sprintf("%.1f", float64(kib)/1024) }
	s := fmt.Sprintf("RssAnon %s MiB, RssFile %s, VmRSS %s, Pss %s", mib(m.RssAnon), mib(m.RssFile), mib(m.VmRSS), mib(m.Pss))
	if m.PssAnon >= 0 {
		s += ", Pss_Anon " + mib(m.PssAnon)
	}
	return s
}

// parseProcMemory reads procMemory from the contents of /proc/<pid>/status
// and /proc/<pid>/smaps_rollup. It returns an error naming every field that
// is missing or not a "N kB" value; Pss_Anon may be missing.
func parseProcMemory(status, smapsRollup []byte) (procMemory, error) {
	m := procMemory{PssAnon: -1}
	var problems []string
	for _, f := range []struct {
		data     []byte
		file     string
		key      string
		dst      *int64
		optional bool
	}{
		{status, "status", "VmRSS", &m.VmRSS, false},
		{status, "status", "RssAnon", &m.RssAnon, false},
		{status, "status", "RssFile", &m.RssFile, false},
		{smapsRollup, "smaps_rollup", "Pss", &m.Pss, false},
		{smapsRollup, "smaps_rollup", "Pss_Anon", &m.PssAnon, true},
	} {
		v, found, err := kibField(f.data, f.key)
		switch {
		case err != nil:
			problems = append(problems, fmt.Sprintf("%s %s: %v", f.file, f.key, err))
		case found:
			*f.dst = v
		case !f.optional:
			problems = append(problems, fmt.Sprintf("%s has no %s", f.file, f.key))
		}
	}
	if len(problems) > 0 {
		return m, fmt.Errorf("parse process memory: %s", strings.Join(problems, "; "))
	}
	return m, nil
}

// kibField returns the value of the line "key: N kB".
func kibField(data []byte, key string) (kib int64, found bool, err error) {
	for line := range bytes.Lines(data) {
		k, v, ok := bytes.Cut(line, []byte(":"))
		if !ok || string(k) != key {
			continue
		}
		f := strings.Fields(string(v))
		if len(f) != 2 || f[1] != "kB" {
			return 0, true, fmt.Errorf("%q is not N kB", strings.TrimSpace(string(v)))
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, true, err
		}
		return n, true, nil
	}
	return 0, false, nil
}

func TestParseProcMemory(t *testing.T) {
	// Captured from hookd idling with 10 targets (linux 6.18, amd64).
	status := readTestdata(t, "proc-status.txt")
	rollup := readTestdata(t, "proc-smaps_rollup.txt")
	withoutPssAnon := dropLines(rollup, "Pss_Anon:")

	tests := []struct {
		name            string
		status, rollup  []byte
		want            procMemory
		wantErrContains []string
	}{
		{name: "captured", status: status, rollup: rollup,
			want: procMemory{VmRSS: 18980, RssAnon: 7100, RssFile: 11880, Pss: 18972, PssAnon: 7100}},
		{name: "kernel without Pss_Anon", status: status, rollup: withoutPssAnon,
			want: procMemory{VmRSS: 18980, RssAnon: 7100, RssFile: 11880, Pss: 18972, PssAnon: -1}},
		{name: "fields missing", status: dropLines(status, "RssAnon:", "RssFile:"), rollup: dropLines(rollup, "Pss:"),
			wantErrContains: []string{"status has no RssAnon", "status has no RssFile", "smaps_rollup has no Pss"}},
		{name: "not in kB", status: bytes.Replace(status, []byte("VmRSS:\t   18980 kB"), []byte("VmRSS:\t18980"), 1), rollup: rollup,
			wantErrContains: []string{"status VmRSS"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseProcMemory(tt.status, tt.rollup)
			if len(tt.wantErrContains) > 0 {
				if err == nil {
					t.Fatalf("parseProcMemory() = %+v, nil; want an error", got)
				}
				for _, s := range tt.wantErrContains {
					if !strings.Contains(err.Error(), s) {
						t.Errorf("parseProcMemory() error %q does not contain %q", err, s)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("parseProcMemory() error: %v", err)
			}
			if got != tt.want {
				t.Errorf("parseProcMemory() = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func readTestdata(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// dropLines returns data without the lines starting with any of prefixes.
func dropLines(data []byte, prefixes ...string) []byte {
	var out []byte
	for line := range bytes.Lines(data) {
		drop := false
		for _, p := range prefixes {
			drop = drop || bytes.HasPrefix(line, []byte(p))
		}
		if !drop {
			out = append(out, line...)
		}
	}
	return out
}
