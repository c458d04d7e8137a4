package memtrim

import (
	"os"
	"reflect"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// canary lives in the program's writable data: a trim must keep what was
// written to it (MADV_DONTNEED on that private mapping would revert it to
// the file's bytes).
var canary = [4 << 10]int64{1, 2, 3}

func TestTrimGivesBackFreedHeap(t *testing.T) {
	// Hold 64 MiB, touched, then let it go: the runtime keeps the freed
	// pages for a while.
	big := make([]byte, 64<<20)
	for i := range big {
		if i%4096 == 0 {
			big[i] = 1
		}
	}
	runtime.KeepAlive(big)
	big = nil
	runtime.GC()

	before := statusKiB(t, "RssAnon")
	if _, err := trim(); err != nil {
		t.Errorf("trim: %v", err)
	}
	after := statusKiB(t, "RssAnon")
	t.Logf("anonymous resident %d → %d KiB", before, after)
	if before-after < 32<<10 {
		t.Errorf("anonymous resident %d → %d KiB, want the freed 64 MiB mostly returned", before, after)
	}
}

func TestTrimUnmapsProgramPagesKeepsWrittenData(t *testing.T) {
	canary[0], canary[len(canary)-1] = 42, 43
	smaps, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	defer smaps.Close()
	buf := make([]byte, 4<<20)
	read := func() []byte {
		n := 0
		for {
			m, err := syscall.Pread(int(smaps.Fd()), buf[n:], int64(n))
			if m <= 0 || err != nil {
				return buf[:n]
			}
			n += m
		}
	}
	regions, err := programRegions(read(), uint64(reflect.ValueOf(programKiB).Pointer()))
	if err != nil {
		t.Fatal(err)
	}
	// Map every page of the program, as a long-running hookd ends up doing.
	mem, err := os.Open("/proc/self/mem")
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	for _, r := range regions {
		if _, err := mem.ReadAt(make([]byte, r.end-r.start), int64(r.start)); err != nil {
			t.Fatalf("read own memory %#x-%#x: %v", r.start, r.end, err)
		}
	}
	before := programKiB(t, read())

	dropped, err := dropProgramPages()
	snapshot := slices.Clone(read()) // before anything else runs
	if err != nil {
		t.Fatalf("dropProgramPages: %v", err)
	}
	after := programKiB(t, snapshot)
	t.Logf("program's read-only pages: %d → %d KiB resident, %d KiB of mappings unmapped", before, after, dropped>>10)
	if after > before/2 {
		t.Errorf("program's read-only pages %d → %d KiB resident, want them unmapped", before, after)
	}
	if canary[0] != 42 || canary[len(canary)-1] != 43 || canary[1] != 2 {
		t.Errorf("writable data changed by the trim: canary = %d, %d, %d; want 42, 2, 43",
			canary[0], canary[1], canary[len(canary)-1])
	}
}

func TestProgramRegions(t *testing.T) {
	// Trimmed from a real /proc/self/smaps; the second r--p mapping of the
	// binary is a PIE's relocated data, made read-only after it was written.
	smaps := `00400000-009a3000 r-xp 00000000 fd:01 1234                               /usr/local/bin/hookd
Size:               5772 kB
Rss:                5388 kB
Anonymous:             0 kB
VmFlags: rd ex mr mw me
009a3000-00ff1000 r--p 005a3000 fd:01 1234                               /usr/local/bin/hookd
Size:               6456 kB
Rss:                5944 kB
Anonymous:             0 kB
VmFlags: rd mr mw me
00ff1000-01000000 r--p 00bf1000 fd:01 1234                               /usr/local/bin/hookd
Size:                 60 kB
Rss:                  60 kB
Anonymous:            60 kB
VmFlags: rd mr mw me ac
01000000-0105c000 rw-p 00c00000 fd:01 1234                               /usr/local/bin/hookd
Size:                368 kB
Rss:                 364 kB
Anonymous:           120 kB
VmFlags: rd wr mr mw me ac
0105c000-030a1000 rw-p 00000000 00:00 0
Size:              33044 kB
Anonymous:           112 kB
7fbeb7a30000-7fbeb7a38000 r--s 00000000 fd:01 99                         /var/lib/hookd/hookd.db
Size:                 32 kB
Anonymous:             0 kB
7fbeb7b00000-7fbeb7b10000 r--p 00000000 fd:01 77                         /usr/lib/other.so
Size:                 64 kB
Anonymous:             0 kB
7ffe268b8000-7ffe268d9000 rw-p 00000000 00:00 0                          [stack]
Size:                132 kB
Anonymous:            16 kB
`
	got, err := programRegions([]byte(smaps), 0x500000)
	if err != nil {
		t.Fatalf("programRegions: %v", err)
	}
	want := []region{{0x400000, 0x9a3000}, {0x9a3000, 0xff1000}}
	if !slices.Equal(got, want) {
		t.Errorf("programRegions = %x, want %x (the binary's text and read-only data, nothing written to)", got, want)
	}

	if _, err := programRegions([]byte(smaps), 0x1); err == nil {
		t.Error("programRegions with a pc outside every mapping: no error, want one")
	}
	if _, err := programRegions([]byte(smaps), 0x0105d000); err == nil {
		t.Error("programRegions with a pc in an anonymous mapping: no error, want one")
	}
}

func statusKiB(t *testing.T, field string) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				t.Fatalf("%s: %v", field, err)
			}
			return n
		}
	}
	t.Fatalf("no %s in /proc/self/status", field)
	return 0
}

// programKiB sums the resident size of the program's read-only mappings
// in an smaps snapshot.
func programKiB(t *testing.T, smaps []byte) int64 {
	t.Helper()
	regions, err := programRegions(smaps, uint64(reflect.ValueOf(programKiB).Pointer()))
	if err != nil {
		t.Fatal(err)
	}
	all, err := parseSmaps(smaps)
	if err != nil {
		t.Fatal(err)
	}
	var sum int64
	for _, m := range all {
		if slices.Contains(regions, m.region) {
			sum += m.rssKiB
		}
	}
	return sum
}
