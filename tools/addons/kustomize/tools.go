// Pins kustomize, which renders KEDA's install manifests from the kustomizations KEDA ships
// in its module (config/minimal: KEDA's "core" release file), as KEDA's own release does.
//go:build tools

package tools

import (
	_ "sigs.k8s.io/kustomize/kustomize/v5"
)
