package checks

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"
)

// dashboard is the part of Grafana's dashboard JSON the checks read.
type dashboard struct {
	Inputs []struct {
		Name     string `json:"name"`
		Type     string `json:"type"`
		PluginID string `json:"pluginId"`
	} `json:"__inputs"`
	UID         string  `json:"uid"`
	Title       string  `json:"title"`
	ID          *int    `json:"id"`
	Panels      []panel `json:"panels"`
	Annotations struct {
		List []struct {
			Name       string      `json:"name"`
			Datasource *datasource `json:"datasource"`
			Expr       string      `json:"expr"`
		} `json:"list"`
	} `json:"annotations"`
	Templating struct {
		List []struct {
			Name       string          `json:"name"`
			Datasource *datasource     `json:"datasource"`
			Definition string          `json:"definition"`
			Query      json.RawMessage `json:"query"`
		} `json:"list"`
	} `json:"templating"`
}

type datasource struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type panel struct {
	ID         int         `json:"id"`
	Type       string      `json:"type"`
	Title      string      `json:"title"`
	Datasource *datasource `json:"datasource"`
	GridPos    *struct {
		H, W, X, Y int
	} `json:"gridPos"`
	Targets []struct {
		Datasource *datasource `json:"datasource"`
		Expr       string      `json:"expr"`
		RefID      string      `json:"refId"`
	} `json:"targets"`
	Panels []panel `json:"panels"` // inside collapsed rows
}

// grafanaVars are Grafana's built-in interval variables, replaced by a value
// as Grafana does before it sends a query. Template variables such as
// $instance only appear inside label values and parse as they are.
var grafanaVars = regexp.MustCompile(`\$__(rate_interval|interval|range)\b|\$\{__(rate_interval|interval|range)\}`)

const dsInput = "${DS_PROMETHEUS}"

func TestGrafanaDashboard(t *testing.T) {
	var d dashboard
	if err := json.Unmarshal(readRepoFile(t, "deploy/grafana/hookd.json"), &d); err != nil {
		t.Fatalf("deploy/grafana/hookd.json: %v", err)
	}
	// Import format: the data source is an input chosen on import.
	if len(d.Inputs) != 1 || d.Inputs[0].Name != "DS_PROMETHEUS" || d.Inputs[0].PluginID != "prometheus" {
		t.Errorf("__inputs = %+v, want one prometheus data source input DS_PROMETHEUS", d.Inputs)
	}
	if d.ID != nil {
		t.Errorf("id = %d, want null so that import creates a new dashboard", *d.ID)
	}
	if d.UID == "" || d.Title == "" {
		t.Errorf("uid %q, title %q: want both", d.UID, d.Title)
	}

	series := exportedSeries(t)
	checkDS := func(where string, ds *datasource) {
		t.Helper()
		if ds == nil || ds.UID != dsInput {
			t.Errorf("%s: data source %+v, want uid %s", where, ds, dsInput)
		}
	}
	check := func(where, expr string) []string {
		t.Helper()
		names, problems := checkExpr(grafanaVars.ReplaceAllString(expr, "5m"), series)
		for _, p := range problems {
			t.Errorf("%s: %s\n  expr: %s", where, p, expr)
		}
		return names
	}

	read := map[string]bool{}
	ids := map[int]bool{}
	var queries int
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			if ids[p.ID] {
				t.Errorf("panel id %d used twice", p.ID)
			}
			ids[p.ID] = true
			if p.GridPos == nil || p.GridPos.W == 0 || p.GridPos.H == 0 {
				t.Errorf("panel %q has no size (gridPos)", p.Title)
			}
			if p.Type == "row" {
				walk(p.Panels)
				continue
			}
			checkDS("panel "+p.Title, p.Datasource)
			if len(p.Targets) == 0 {
				t.Errorf("panel %q has no queries", p.Title)
			}
			for _, tg := range p.Targets {
				queries++
				checkDS("panel "+p.Title+" query "+tg.RefID, tg.Datasource)
				names := check("panel "+p.Title+" query "+tg.RefID, tg.Expr)
				if len(names) == 0 {
					t.Errorf("panel %q query %s reads no hookd series", p.Title, tg.RefID)
				}
				for _, n := range names {
					read[strings.TrimSuffix(n, "_bucket")] = true
				}
			}
		}
	}
	walk(d.Panels)
	if queries == 0 {
		t.Fatal("the dashboard has no queries")
	}
	for _, a := range d.Annotations.List {
		if a.Expr != "" {
			checkDS("annotation "+a.Name, a.Datasource)
			check("annotation "+a.Name, a.Expr)
		}
	}
	for _, v := range d.Templating.List {
		if v.Datasource != nil {
			checkDS("variable "+v.Name, v.Datasource)
		}
		if m := regexp.MustCompile(`label_values\((\w+),`).FindStringSubmatch(v.Definition); m != nil && series[m[1]] == nil {
			t.Errorf("variable %s reads %s, which hookd does not export", v.Name, m[1])
		}
	}

	// What issue 5 asks the dashboard to show.
	for _, want := range []string{
		"hookd_deploys_total",
		"hookd_deploy_lead_time_seconds",
		"hookd_rollbacks_total",
		"hookd_webhook_deliveries_total",
		"hookd_queue_pending",
	} {
		if !read[want] {
			t.Errorf("no panel reads %s", want)
		}
	}
}
