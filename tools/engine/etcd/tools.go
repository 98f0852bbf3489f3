// Pins the upstream module this wrapper builds; tools/engine/build compiles its main package(s)
// with this go.mod, so the versions and hashes here (go.sum) are what gets built.
//go:build tools

package tools

import (
	_ "go.etcd.io/etcd/server/v3"
)
