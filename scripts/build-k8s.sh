#!/usr/bin/env bash
# Build the real Kubernetes control plane from the pinned Go modules under third_party/:
# kube-apiserver, kube-controller-manager, kube-scheduler (third_party/kubernetes) and kine
# (third_party/kine), into .k8s/bin (ignored by git). Nothing of ours is Go: the modules only
# pin versions; go.sum is committed, so every machine builds the same sources.
#
# A second run does nothing; a change to a go.mod/go.sum or to the build flags rebuilds. The cold
# build downloads the modules (~1 GiB) and compiles ~4,000 packages: about 10 minutes on a
# 2-core machine (docs/benchmarks.md has the measured figures).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=$(realpath -m "${K8S_BIN_DIR:-.k8s/bin}")
K8S_VERSION=v1.37.2   # keep equal to the require line in third_party/kubernetes/go.mod

# The version Kubernetes' own build stamps in (hack/lib/version.sh): kubectl and clients read it.
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=${K8S_VERSION} -X $pkg.gitMajor=1 -X $pkg.gitMinor=37"
  ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=2026-01-01T00:00:00Z"
done

# What the binaries are made from: the pins and the flags. Nothing else triggers a rebuild.
stamp="$OUT/.stamp"
want=$( (cat third_party/kubernetes/go.{mod,sum} third_party/kine/go.{mod,sum}; echo "$ldflags") \
  | sha256sum | cut -c1-16)
built() { for b in kube-apiserver kube-controller-manager kube-scheduler kine; do [ -x "$OUT/$b" ] || return 1; done; }
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && built; then
  exit 0
fi

if ! command -v go >/dev/null; then
  echo "build-k8s: Go is needed to build the control plane (1.26.5 or newer)" >&2
  exit 1
fi
mkdir -p "$OUT"
rm -f "$stamp"
start=$SECONDS
echo "build-k8s: building the Kubernetes control plane ${K8S_VERSION} and kine from pinned Go" \
  "modules into $OUT (first time: about 10 minutes on 2 cores; later runs skip this)"

build() {  # build DIR PACKAGE NAME CGO
  local t=$SECONDS
  echo "build-k8s: [$3] compiling ($1)"
  (cd "$1" && CGO_ENABLED=$4 go build -trimpath -ldflags "$ldflags" -o "$OUT/$3" "$2")
  echo "build-k8s: [$3] done in $((SECONDS - t)) s, $(du -h "$OUT/$3" | cut -f1)"
}

(cd third_party/kubernetes && go mod download)
echo "build-k8s: modules downloaded ($((SECONDS - start)) s)"
build third_party/kubernetes k8s.io/kubernetes/cmd/kube-apiserver kube-apiserver 0
build third_party/kubernetes k8s.io/kubernetes/cmd/kube-controller-manager kube-controller-manager 0
build third_party/kubernetes k8s.io/kubernetes/cmd/kube-scheduler kube-scheduler 0
# kine keeps its data in SQLite through mattn/go-sqlite3, which needs cgo.
build third_party/kine github.com/k3s-io/kine kine 1
echo "$want" > "$stamp"
echo "build-k8s: control plane built in $((SECONDS - start)) s"
