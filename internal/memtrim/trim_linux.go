package memtrim

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"reflect"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
)

// resident returns the process's resident set size in bytes.
func resident() (int64, error) {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0, err
	}
	f := bytes.Fields(b)
	if len(f) < 2 {
		return 0, fmt.Errorf("read /proc/self/statm: %q has no resident field", b)
	}
	pages, err := strconv.ParseInt(string(f[1]), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("read /proc/self/statm: %w", err)
	}
	return pages * int64(os.Getpagesize()), nil
}

// trim returns free heap pages to the OS and unmaps the program's
// read-only pages; it returns how many bytes of mappings it unmapped.
func trim() (int64, error) {
	debug.FreeOSMemory()
	return dropProgramPages()
}

// dropProgramPages unmaps the read-only mappings of the executable file
// this code runs from that hold no private copy of a page. A page written
// to (a writable mapping, or a PIE binary's relocated data made read-only
// afterwards) is a private copy: MADV_DONTNEED would throw it away and the
// next read would see the file's bytes, so such a mapping is never touched.
func dropProgramPages() (int64, error) {
	smaps, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		return 0, err
	}
	regions, err := programRegions(smaps, uint64(reflect.ValueOf(dropProgramPages).Pointer()))
	if err != nil {
		return 0, err
	}
	var dropped int64
	var errs []error
	for _, r := range regions {
		if _, _, e := syscall.Syscall(syscall.SYS_MADVISE, uintptr(r.start), uintptr(r.end-r.start), syscall.MADV_DONTNEED); e != 0 {
			errs = append(errs, fmt.Errorf("madvise %#x-%#x: %w", r.start, r.end, e))
			continue
		}
		dropped += int64(r.end - r.start)
	}
	return dropped, errors.Join(errs...)
}

type region struct{ start, end uint64 }

// mapping is one entry of /proc/self/smaps.
type mapping struct {
	region
	perms, file string // file is "device inode"; "" for no file
	anon        bool   // holds a private copy of some page
	rssKiB      int64
}

// parseSmaps reads the entries of /proc/self/smaps.
func parseSmaps(smaps []byte) ([]*mapping, error) {
	var all []*mapping
	var cur *mapping
	s := bufio.NewScanner(bytes.NewReader(smaps))
	for s.Scan() {
		line := s.Text()
		if key, val, ok := strings.Cut(line, ":"); ok && cur != nil && !strings.Contains(key, " ") {
			kib, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(val), "kB")), 10, 64)
			switch key {
			case "Anonymous":
				cur.anon = kib != 0
			case "Rss":
				cur.rssKiB = kib
			}
			continue
		}
		// A mapping's first line: start-end perms offset device inode [path]
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		lo, hi, ok := strings.Cut(f[0], "-")
		if !ok {
			continue
		}
		start, err1 := strconv.ParseUint(lo, 16, 64)
		end, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 != nil || err2 != nil {
			continue
		}
		cur = &mapping{region: region{start, end}, perms: f[1]}
		if f[4] != "0" {
			cur.file = f[3] + " " + f[4]
		}
		all = append(all, cur)
	}
	return all, s.Err()
}

// programRegions parses /proc/self/smaps and returns the mappings of the
// file that holds the mapping containing pc (the program) that are private,
// not writable and hold no anonymous (privately copied) page: its text and
// read-only data.
func programRegions(smaps []byte, pc uint64) ([]region, error) {
	all, err := parseSmaps(smaps)
	if err != nil {
		return nil, err
	}
	var self string
	for _, m := range all {
		if m.start <= pc && pc < m.end {
			self = m.file
		}
	}
	if self == "" {
		return nil, errors.New("the program's own file mapping is not in /proc/self/smaps")
	}
	var out []region
	for _, m := range all {
		if m.file == self && !m.anon && len(m.perms) == 4 && m.perms[1] != 'w' && m.perms[3] == 'p' {
			out = append(out, m.region)
		}
	}
	return out, nil
}
