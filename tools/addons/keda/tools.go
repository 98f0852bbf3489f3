// Pins the upstream module this wrapper builds; tools/addons/build compiles KEDA's operator
// and its metrics server with this go.mod, so the versions and hashes here (go.sum) are what
// gets built.
//go:build tools

package tools

import (
	_ "github.com/kedacore/keda/v2/cmd/adapter"
	_ "github.com/kedacore/keda/v2/cmd/operator"
)
