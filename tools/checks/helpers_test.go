package checks

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/and3rn3t/hookd/internal/metrics"
)

// repoRoot returns the hookd checkout this module lives in (../..).
func repoRoot(t *testing.T) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("cannot locate the source of the checks")
	}
	root, err := filepath.Abs(filepath.Join(filepath.Dir(file), "..", ".."))
	if err != nil {
		t.Fatalf("repository root: %v", err)
	}
	return root
}

// repoFile returns the path of a file of the hookd checkout.
func repoFile(t *testing.T, rel string) string {
	t.Helper()
	return filepath.Join(repoRoot(t), filepath.FromSlash(rel))
}

// readRepoFile reads a file of the hookd checkout.
func readRepoFile(t *testing.T, rel string) []byte {
	t.Helper()
	data, err := os.ReadFile(repoFile(t, rel))
	if err != nil {
		t.Fatalf("read %s: %v", rel, err)
	}
	return data
}

// hookdSetting is one entry of cmd/hookd's settings table.
type hookdSetting struct {
	key, env string
	secret   bool
}

// hookdSettings reads the settings table of cmd/hookd (config.go, var
// settings) from its source: package main cannot be imported, and the
// table, not a copy of it, is what the example files must follow.
func hookdSettings(t *testing.T) []hookdSetting {
	t.Helper()
	path := repoFile(t, "cmd/hookd/config.go")
	f, err := parser.ParseFile(token.NewFileSet(), path, nil, 0)
	if err != nil {
		t.Fatalf("parse %s: %v", path, err)
	}
	var out []hookdSetting
	ast.Inspect(f, func(n ast.Node) bool {
		vs, ok := n.(*ast.ValueSpec)
		if !ok || len(vs.Names) != 1 || vs.Names[0].Name != "settings" || len(vs.Values) != 1 {
			return true
		}
		list, ok := vs.Values[0].(*ast.CompositeLit)
		if !ok {
			t.Fatalf("%s: settings is not a composite literal", path)
		}
		for _, el := range list.Elts {
			lit, ok := el.(*ast.CompositeLit)
			if !ok {
				continue
			}
			var s hookdSetting
			for _, f := range lit.Elts {
				kv, ok := f.(*ast.KeyValueExpr)
				if !ok {
					continue
				}
				name, _ := kv.Key.(*ast.Ident)
				if name == nil {
					continue
				}
				switch v := kv.Value.(type) {
				case *ast.BasicLit:
					if v.Kind != token.STRING {
						continue
					}
					str, err := strconv.Unquote(v.Value)
					if err != nil {
						t.Fatalf("%s: %v", path, err)
					}
					switch name.Name {
					case "key":
						s.key = str
					case "env":
						s.env = str
					}
				case *ast.Ident:
					if name.Name == "secret" && v.Name == "true" {
						s.secret = true
					}
				}
			}
			if s.key != "" {
				out = append(out, s)
			}
		}
		return false
	})
	if len(out) < 10 {
		t.Fatalf("found %d settings in %s, want the whole table (has var settings moved?)", len(out), path)
	}
	return out
}

// exportedSeries returns every series name hookd exposes, with the label
// names it carries: what metrics.New registers (read from the descriptors,
// so that vectors without a child yet count too), the _bucket, _sum and
// _count series of histograms and summaries, and "up", which Prometheus adds
// to every scraped target. The labels Prometheus attaches to every series
// (job, instance) are not listed.
func exportedSeries(t *testing.T) map[string]map[string]bool {
	t.Helper()
	reg := prometheus.NewRegistry()
	rec := &recordingRegisterer{Registerer: reg}
	metrics.New(rec, metrics.BuildInfo{Version: "test", Revision: "test"})
	rec.MustRegister(metrics.StateQuarantined(func() uint64 { return 0 })) // registered beside New by run.go

	series := map[string]map[string]bool{"up": {}}
	add := func(name string, labels map[string]bool, histogram, summary bool) {
		set := series[name]
		if set == nil {
			set = map[string]bool{}
			series[name] = set
		}
		for l := range labels {
			set[l] = true
		}
		if histogram {
			bucket := map[string]bool{"le": true}
			for l := range labels {
				bucket[l] = true
			}
			series[name+"_bucket"] = bucket
		}
		if histogram || summary {
			series[name+"_sum"], series[name+"_count"] = labels, labels
		}
	}
	for _, c := range rec.collectors {
		ch := make(chan *prometheus.Desc, 256)
		c.Describe(ch)
		close(ch)
		for d := range ch {
			m := descPattern.FindStringSubmatch(d.String())
			if m == nil {
				t.Fatalf("cannot read name and labels of %s", d)
			}
			labels := map[string]bool{}
			for _, pair := range strings.Split(m[2], ",") {
				if name, _, _ := strings.Cut(pair, "="); name != "" {
					labels[name] = true
				}
			}
			for _, l := range strings.Split(m[3], ",") {
				if l = strings.TrimSuffix(strings.TrimPrefix(l, "c("), ")"); l != "" {
					labels[l] = true
				}
			}
			_, isHistogram := c.(prometheus.Histogram)
			_, isHistogramVec := c.(*prometheus.HistogramVec)
			add(m[1], labels, isHistogram || isHistogramVec, false)
		}
	}
	// The Go and process collectors describe their series only partly;
	// what they gather is what Prometheus sees.
	families, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather hookd metrics: %v", err)
	}
	for _, f := range families {
		labels := map[string]bool{}
		for _, m := range f.GetMetric() {
			for _, lp := range m.GetLabel() {
				labels[lp.GetName()] = true
			}
		}
		typ := f.GetType()
		add(f.GetName(), labels,
			typ == dto.MetricType_HISTOGRAM || typ == dto.MetricType_GAUGE_HISTOGRAM,
			typ == dto.MetricType_SUMMARY)
	}
	if series["hookd_deploys_total"] == nil {
		t.Fatalf("hookd_deploys_total is not among the registered series %v", series)
	}
	return series
}

// descPattern reads name, constant and variable labels from
// prometheus.Desc's String().
var descPattern = regexp.MustCompile(`fqName: "([^"]+)".*constLabels: \{([^}]*)\}, variableLabels: \{([^}]*)\}`)

// recordingRegisterer remembers what metrics.New registers.
type recordingRegisterer struct {
	prometheus.Registerer
	collectors []prometheus.Collector
}

func (r *recordingRegisterer) Register(c prometheus.Collector) error {
	r.collectors = append(r.collectors, c)
	return r.Registerer.Register(c)
}

func (r *recordingRegisterer) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := r.Register(c); err != nil {
			panic(err)
		}
	}
}
