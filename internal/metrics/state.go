package metrics

import "github.com/prometheus/client_golang/prometheus"

// StateQuarantined returns hookd_state_records_quarantined_total, read from
// n at each scrape: the records of the state file (jobs, journal entries)
// that no longer decoded and were moved aside since hookd started. Register
// it on the registry New was given.
func StateQuarantined(n func() uint64) prometheus.Collector {
	return prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "hookd_state_records_quarantined_total",
		Help: "State file records (jobs, journal entries) that no longer decoded and were moved to its quarantine bucket since hookd started.",
	}, func() float64 { return float64(n()) })
}
