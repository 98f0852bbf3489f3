# shellcheck shell=bash
# Helpers shared by tools/engine/build and tools/node/build, so both build their wrapper
# modules the same way. The sourcing script sets, before calling any of them:
#   here      its own directory; wrapper directories are given relative to it
#   bin       the cache's bin directory that binaries are installed into
#   scratch   a scratch directory; fresh binaries go to $scratch/out
#   label     "engine" or "node", for messages
#   versions  where its pins live, e.g. tools/engine/versions.sh, for the failure hint
# shellcheck disable=SC2154  # those are the sourcing script's

# The module a `go` failure names, e.g. "k8s.io/api@v0.34.4", for a plain error message.
explain_failure() {
  local component="$1" log="$2" missing
  missing="$(grep -oE '[A-Za-z0-9._~/-]+@v[0-9][A-Za-z0-9.+-]*' "$log" | grep -v '^gru.local' | sort -u | head -5 || true)"
  echo "$label build: building $component failed." >&2
  if grep -qE '403 Forbidden|404 Not Found|410 Gone|not available|unknown revision' "$log" && [[ -n "$missing" ]]; then
    echo "$label build: the Go module proxy did not serve: $(echo "$missing" | tr '\n' ' ')" >&2
    echo "$label build: pick versions it serves in $versions and that wrapper's go.mod." >&2
  fi
  tail -20 "$log" >&2
  exit 1
}

# go_build COMPONENT WRAPPER_DIR LDFLAGS PACKAGE... : build PACKAGES of WRAPPER_DIR into $scratch/out.
go_build() {
  local component="$1" wrapper="$2" ldflags="$3"; shift 3
  local work="$scratch/$component" log="$scratch/$component.log" start=$SECONDS
  [[ -d "$work" ]] || cp -r "$here/$wrapper" "$work"
  echo "--- $label: building $component" >&2
  if ! (cd "$work" && go mod download >"$log" 2>&1 && go build -ldflags "-s -w $ldflags" -o "$scratch/out/" "$@" >>"$log" 2>&1); then
    explain_failure "$component" "$log"
  fi
  echo "--- $label: $component built in $((SECONDS - start)) s" >&2
}

# install NAME: move a freshly built binary into the cache (atomic per file).
install_bin() {
  install -m 0755 "$scratch/out/$1" "$bin/.$1.tmp" && mv -f "$bin/.$1.tmp" "$bin/$1"
}

module_dir() {  # module_dir MODULE@VERSION WRAPPER: where the module cache holds it
  (cd "$here/$2" && go mod download -json "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
}

# module_info MODULE@VERSION WRAPPER FIELD: a field of what the proxy says about that version,
# "Time" (its release time) or "Origin.Hash" (its commit); empty when the proxy does not say.
# Upstream release builds stamp these into the binary; this gives the same, reproducibly.
module_info() {
  (cd "$here/$2" && go list -m -json "$1" | python3 -c '
import json, sys
value = json.load(sys.stdin)
for part in sys.argv[1].split("."):
    value = value.get(part, {}) if isinstance(value, dict) else {}
print(value if isinstance(value, str) else "")' "$3")
}

# kube_version_ldflags VERSION: what the Kubernetes release build stamps in (hack/lib/version.sh).
# Without these a component reports v0.0.0: pulumi-kubernetes refuses such an API server, and
# a node would show v0.0.0 as its kubelet version.
kube_version_ldflags() {
  local version="$1" minor
  minor="${version#*.}"; minor="${minor%%.*}"
  local v="-X k8s.io/component-base/version.gitVersion=v$version -X k8s.io/component-base/version.gitMajor=1"
  v="$v -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean"
  v="$v -X k8s.io/client-go/pkg/version.gitVersion=v$version -X k8s.io/client-go/pkg/version.gitMajor=1"
  v="$v -X k8s.io/client-go/pkg/version.gitMinor=$minor"
  echo "$v"
}
