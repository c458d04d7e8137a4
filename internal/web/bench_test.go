package web

import (
	"net/http"
	"net/http/httptest"
	"syscall"
	"testing"
	"time"
)

// cpuTime is the CPU time the process has used (user and system, every
// thread: the garbage collector's work counts too).
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkOverview renders the overview of 50 targets with 1,000 jobs (20
// each) in the state file, through the real deployer and store, as a
// signed-in GET reaches it (session check, security headers, render); it
// reports the page's bytes too, and the CPU time per render (cpu-ns/op),
// which the machine's load does not inflate as it does the wall time. The assets add about 5 KB once, compressed
// (TestOverviewWeight measures page and assets over the wire).
//
//	go test -run '^$' -bench Overview -benchmem ./internal/web
func BenchmarkOverview(b *testing.B) {
	targets, jobs := fleet(50, 20)
	r := newRig(b, rigOptions{targets: targets, jobs: jobs})
	_, cookie := r.site.newSession(0)
	h := r.site.Guard(r.site.RequireSession(r.site.Overview()))
	req := httptest.NewRequest(http.MethodGet, "/", nil)
	req.AddCookie(&http.Cookie{Name: sessionCookie, Value: cookie})
	var size int
	cpu0 := cpuTime()
	for b.Loop() {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			b.Fatalf("GET / = %d", rec.Code)
		}
		size = rec.Body.Len()
	}
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/op")
	b.ReportMetric(float64(size), "page-bytes")
}
