"""A local Kubernetes control plane (etcd, kube-apiserver, controller-manager, scheduler, kwok)
on loopback, built by tools/engine/build, for running the real Pulumi engine against."""
