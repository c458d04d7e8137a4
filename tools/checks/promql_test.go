package checks

import (
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"

	"github.com/and3rn3t/hookd/internal/metrics"
)

// scrapeLabels are attached by Prometheus to every series it scrapes.
var scrapeLabels = map[string]bool{"job": true, "instance": true}

// labelValues are the fixed label value sets of hookd's series (issue 5 fixes
// the names). A selector that compares one of these labels to anything else
// would silently never match.
var labelValues = map[string]map[string][]string{
	"hookd_webhook_deliveries_total": {"outcome": {
		metrics.OutcomeQueued, metrics.OutcomeIgnored, metrics.OutcomeDuplicate,
		metrics.OutcomeInvalidSignature, metrics.OutcomeBadRequest, metrics.OutcomeTooLarge,
		metrics.OutcomeQueueFull, "error",
	}},
	"hookd_deploys_total": {
		"outcome": {"succeeded", "up_to_date", "rolled_back", "failed"},
		"trigger": {"webhook", "poll", "manual"},
	},
	"hookd_deploy_lead_time_seconds": {"trigger": {"webhook", "poll", "manual"}},
	"hookd_rollbacks_total":          {"reason": {"unhealthy", "exited", "timeout", "start_failed"}},
	"hookd_poll_checks_total": {"outcome": {
		metrics.PollUnchanged, metrics.PollChanged, metrics.PollError, metrics.PollRateLimited,
	}},
	"hookd_deploy_duration_seconds": {"phase": {"pull", "swap", "health", "total"}},
}

// promqlParser is Prometheus' own PromQL parser with its default options.
var promqlParser = parser.NewParser(parser.Options{})

// checkExpr parses a PromQL expression and returns one problem for every
// selector that names no series hookd exports, matches a label the series
// does not carry, or compares a fixed-set label to a value outside its set.
// It also returns the series names the expression reads.
func checkExpr(expr string, series map[string]map[string]bool) (names []string, problems []string) {
	e, err := promqlParser.ParseExpr(expr)
	if err != nil {
		return nil, []string{fmt.Sprintf("parse: %v", err)}
	}
	parser.Inspect(e, func(node parser.Node, _ []parser.Node) error {
		vs, ok := node.(*parser.VectorSelector)
		if !ok {
			return nil
		}
		name := vs.Name
		if name == "" {
			problems = append(problems, fmt.Sprintf("selector %s names no metric", vs))
			return nil
		}
		names = append(names, name)
		carried, ok := series[name]
		if !ok {
			problems = append(problems, fmt.Sprintf("%s is not a series hookd exports", name))
			return nil
		}
		base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(name, "_bucket"), "_sum"), "_count")
		for _, m := range vs.LabelMatchers {
			if m.Name == labels.MetricName {
				continue
			}
			if !carried[m.Name] && !scrapeLabels[m.Name] {
				problems = append(problems, fmt.Sprintf("%s has no label %q", name, m.Name))
				continue
			}
			allowed := labelValues[base][m.Name]
			if allowed == nil {
				continue
			}
			for _, v := range matcherValues(m) {
				if !slices.Contains(allowed, v) {
					problems = append(problems, fmt.Sprintf("%s{%s} compares to %q, which hookd never sets (one of %v)", name, m.Name, v, allowed))
				}
			}
		}
		return nil
	})
	return names, problems
}

// plainAlternatives matches regular expressions that are a plain list of
// values, "a|b|c", the only kind whose values can be checked.
var plainAlternatives = regexp.MustCompile(`^[a-zA-Z0-9_]+(\|[a-zA-Z0-9_]+)*$`)

// matcherValues returns the label values a matcher asks for: its value for
// = and !=, the alternatives of a plain a|b regular expression, else none.
func matcherValues(m *labels.Matcher) []string {
	switch m.Type {
	case labels.MatchEqual, labels.MatchNotEqual:
		if m.Value == "" {
			return nil
		}
		return []string{m.Value}
	case labels.MatchRegexp, labels.MatchNotRegexp:
		if plainAlternatives.MatchString(m.Value) {
			return strings.Split(m.Value, "|")
		}
	}
	return nil
}
