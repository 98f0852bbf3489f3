# Versions of the engine and control plane that tools/engine/build makes, in one place.
# The dev/test Python packages in requirements-dev.txt are pinned to the same Pulumi versions,
# so the SDKs match the plugins. Changing a line here changes the cache key: the next build
# makes a fresh bin directory.

# The Pulumi CLI (module github.com/pulumi/pulumi/pkg/v3) and the Python language host.
# The language host's module has no semver tags: this is the pseudo-version of the v3.184.0
# release commit, the newest release whose language host the module proxy serves.
PULUMI_VERSION=3.184.0
PULUMI_SDK_MODULE_VERSION=v3.185.0  # pkg/v3.184.0 is tagged past sdk/v3.184.0 and needs this sdk
PULUMI_LANGUAGE_PYTHON_MODULE_VERSION=v3.0.0-20250718110245-a8f88047ab64

# pulumi-kubernetes: the provider's v4 module at the v4.25.0 release commit (no semver tags).
PULUMI_KUBERNETES_VERSION=4.25.0
PULUMI_KUBERNETES_MODULE_VERSION=v4.0.0-20260115033456-f47bc2d6f199

# The local control plane.
KUBERNETES_VERSION=1.34.4
ETCD_VERSION=3.6.13
KWOK_VERSION=0.7.0
