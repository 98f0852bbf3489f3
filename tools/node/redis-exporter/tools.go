// Pins the upstream module this wrapper builds; tools/node/build compiles its main package(s)
// with this go.mod, so the versions and hashes here (go.sum) are what gets built.
//go:build tools

package tools

import (
	_ "github.com/oliver006/redis_exporter"
)
