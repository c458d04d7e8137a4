// Package checks validates hookd's packaging with the real tools and loaders
// of each format: the compose file (compose-go), the GitHub workflows
// (actionlint), the Prometheus rules (Prometheus' rule and PromQL parsers,
// against the series hookd really registers), the Grafana dashboard, the
// systemd unit (systemd-analyze verify) and the example configuration.
//
// It is a module of its own so that these heavy validators never enter
// hookd's go.mod; a replace directive points it at the hookd tree, so it can
// import hookd's internal packages. Run it with:
//
//	cd tools/checks && go test ./...
package checks
