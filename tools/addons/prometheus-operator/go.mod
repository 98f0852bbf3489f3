// Pins the Prometheus Operator module for its CRDs only (example/prometheus-operator-crd):
// tools/addons/build installs ServiceMonitor, PodMonitor and PrometheusRule from it, the
// kinds the stacks create. Nothing of it is compiled, so go.sum holds this module's hashes
// alone (`go mod tidy` would drop the unimported requirement: do not run it here).
module gru.local/addons/prometheus-operator

go 1.26.0

require github.com/prometheus-operator/prometheus-operator v0.85.0
