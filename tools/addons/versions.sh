# Versions of the cluster add-ons that tools/addons/build makes, in one place. Changing a line
# here changes the cache key. Each must also be the version its wrapper's go.mod requires.

# KEDA (module github.com/kedacore/keda/v2): its operator and metrics server, from
# tools/addons/keda, and its install manifests, rendered from the module's own config/.
KEDA_VERSION=2.21.0

# kustomize (module sigs.k8s.io/kustomize/kustomize/v5), which renders those manifests as
# KEDA's release does. 5.8.3 needs Go 1.27.
KUSTOMIZE_VERSION=5.8.2

# The Prometheus Operator (module github.com/prometheus-operator/prometheus-operator), for the
# CRDs of the monitoring kinds the stacks create (ServiceMonitor, and PodMonitor and
# PrometheusRule beside it), from the module's example/prometheus-operator-crd.
PROMETHEUS_OPERATOR_VERSION=0.85.0
