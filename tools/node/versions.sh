# Versions of the node binaries that tools/node/build makes, in one place. kubelet and
# kube-proxy are KUBERNETES_VERSION from tools/engine/versions.sh: the node runs the control
# plane's release. Changing a line here changes the cache key: the next build makes a fresh
# bin directory. Each must also be the version its wrapper's go.mod requires.

# CoreDNS (module github.com/coredns/coredns), in tools/node/coredns.
COREDNS_VERSION=1.14.7

# kube-router (module github.com/cloudnativelabs/kube-router/v2): the only v2 release the
# module proxy serves. It runs with --run-firewall only, to enforce NetworkPolicy.
KUBE_ROUTER_VERSION=2.1.0

# The Redis metrics exporter (module github.com/oliver006/redis_exporter); the proxy serves
# v1.61.0 and v1.62.0 but no later release.
REDIS_EXPORTER_VERSION=1.62.0
