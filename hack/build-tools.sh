#!/usr/bin/env bash
# Builds kube-apiserver, kubectl, etcd and helm from their Go modules into bin/, and the node's
# binaries for the cluster tier (kubelet, kube-controller-manager, kube-scheduler, kube-proxy).
#
# Why from source: no release binary can be downloaded on the machines this project is built on, but the
# Go module proxy is reachable. The versions live in hack/tools.env. Finished binaries are kept in a
# per-version cache outside the work tree (TOOLS_CACHE), so a fresh clone on a machine that built them
# once only copies them (seconds); a changed version builds anew.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=tools.env
source "$root/hack/tools.env"

bin_dir=${BIN_DIR:-$root/bin}
cache=${TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/chatterbox-k8s-tools}
# Never let `go` fetch a newer toolchain: the one on the machine is what CI has too.
export GOTOOLCHAIN=local
export GOFLAGS=-mod=mod
mkdir -p "$bin_dir" "$cache"
# The builds get Go caches of their own, removed on exit: the binaries in $cache are what is kept, and
# the build and module caches a full build leaves (9.4 GB) would sit on the disk that the cluster tier's
# image import needs later.
go_caches=$(mktemp -d)
export GOCACHE="$go_caches/build" GOMODCACHE="$go_caches/mod"
trap 'go clean -modcache 2>/dev/null; rm -rf "$go_caches"' EXIT

log() { printf '[tools] %s\n' "$*" >&2; }

# install_cached NAME VERSION BUILD_FUNCTION: runs the build only when the cache lacks NAME@VERSION.
install_cached() {
  local name=$1 version=$2 build=$3
  local dest="$cache/$name-$version"
  if [ ! -x "$dest" ]; then
    log "building $name $version (first time on this machine: minutes)"
    local work
    work=$(mktemp -d)
    "$build" "$work" "$version" "$work/$name"
    mv "$work/$name" "$dest.tmp" && mv "$dest.tmp" "$dest"
    rm -rf "$work"
  fi
  cp -f "$dest" "$bin_dir/$name.tmp" && mv -f "$bin_dir/$name.tmp" "$bin_dir/$name"
  log "$name $version -> bin/$name"
}

# A wrapper module that requires k8s.io/kubernetes and points each staging module (k8s.io/api,
# k8s.io/apiserver, ...) at its published v0.MINOR.PATCH twin: the kubernetes go.mod replaces them with
# ./staging paths, which only work inside its own repository.
kubernetes_module() {
  local work=$1 version=$2
  local staging_version="v0.${version#v1.}"
  local modfile
  modfile=$(mktemp)
  go mod download -json "k8s.io/kubernetes@$version" >/dev/null
  cp "$(go env GOMODCACHE)/cache/download/k8s.io/kubernetes/@v/$version.mod" "$modfile"
  {
    echo "module chatterbox-k8s/tools/kubernetes"
    echo
    echo "go $(go env GOVERSION | sed 's/^go//')"
    echo
    echo "require k8s.io/kubernetes $version"
    echo
    echo "replace ("
    # Only the staging modules that kubernetes actually requires; a few samples are never published.
    sed -n 's#^\s*\(k8s.io/[a-z0-9-]*\) v0.0.0$#\1#p' "$modfile" | while read -r mod; do
      echo "	$mod => $mod $staging_version"
    done
    echo ")"
  } >"$work/go.mod"
  rm -f "$modfile"
}

# The version string kube-apiserver reports (and Helm's kubeVersion checks read) is set at link time;
# without it the binary says v0.0.0-master.
kubernetes_ldflags() {
  local version=$1 minor
  minor=$(echo "$version" | cut -d. -f2)
  local pkg=k8s.io/component-base/version
  echo "-s -w -X $pkg.gitVersion=$version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor" \
    "-X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
}

# build_kubernetes_command WORK VERSION OUT: k8s.io/kubernetes/cmd/<basename of OUT>.
build_kubernetes_command() {
  local work=$1 version=$2 out=$3
  kubernetes_module "$work" "$version"
  (cd "$work" && go build -trimpath -ldflags "$(kubernetes_ldflags "$version")" -o "$out" \
    "k8s.io/kubernetes/cmd/$(basename "$out")")
}

# etcd's server module carries replace lines of its own, so `go install ...@version` refuses it; a
# wrapper module that requires it builds fine.
build_etcd() {
  local work=$1 version=$2 out=$3
  printf 'module chatterbox-k8s/tools/etcd\n\ngo %s\n\nrequire go.etcd.io/etcd/server/v3 %s\n' \
    "$(go env GOVERSION | sed 's/^go//')" "$version" >"$work/go.mod"
  (cd "$work" && go build -trimpath -ldflags "-s -w" -o "$out" go.etcd.io/etcd/server/v3)
}

# A static binary: it runs in an image that holds nothing else but busybox (hack/node-images.sh).
build_local_path_provisioner() {
  local work=$1 version=$2 out=$3
  printf 'module chatterbox-k8s/tools/local-path-provisioner\n\ngo %s\n\nrequire github.com/rancher/local-path-provisioner %s\n' \
    "$(go env GOVERSION | sed 's/^go//')" "$version" >"$work/go.mod"
  (cd "$work" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$out" \
    github.com/rancher/local-path-provisioner)
}

# KServe's controller manager, for the cluster tier's InferenceService mode. Its go.mod replaces
# controller-runtime (and excludes one grpc pseudo-version), which only binds inside its own module: the
# wrapper repeats both lines. Static: it runs in an image that holds nothing else (hack/node-images.sh).
build_kserve_manager() {
  local work=$1 version=$2 out=$3
  local modfile
  go mod download -json "github.com/kserve/kserve@$version" >/dev/null
  modfile="$(go env GOMODCACHE)/cache/download/github.com/kserve/kserve/@v/$version.mod"
  {
    printf 'module chatterbox-k8s/tools/kserve\n\ngo %s\n\nrequire github.com/kserve/kserve %s\n\n' \
      "$(go env GOVERSION | sed 's/^go//')" "$version"
    grep -E '^(replace|exclude) ' "$modfile"
  } >"$work/go.mod"
  (cd "$work" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$out" \
    github.com/kserve/kserve/cmd/manager)
}

# KServe's own YAML that the cluster tier installs beside the manager (its CRDs, ClusterRole, webhook
# configurations and inferenceservice-config), from the same module, so that tests need no Go.
build_kserve_config() {
  local work=$1 version=$2 out=$3
  local dir
  dir=$(go mod download -json "github.com/kserve/kserve@$version" | sed -n 's/^\s*"Dir": "\(.*\)",$/\1/p')
  tar -C "$dir" -cf "$out" config/crd/full config/configmap/inferenceservice.yaml config/rbac/role.yaml \
    config/webhook/manifests.yaml
}

build_helm() {
  local work=$1 version=$2 out=$3
  GOBIN="$work" go install -trimpath \
    -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$version" \
    "helm.sh/helm/v3/cmd/helm@$version"
}

install_cached etcd "$ETCD_VERSION" build_etcd
for command in kube-apiserver kubectl kube-controller-manager kube-scheduler kubelet kube-proxy; do
  install_cached "$command" "$KUBERNETES_VERSION" build_kubernetes_command
done
install_cached helm "$HELM_VERSION" build_helm
install_cached local-path-provisioner "$LOCAL_PATH_PROVISIONER_VERSION" build_local_path_provisioner
install_cached kserve-manager "$KSERVE_VERSION" build_kserve_manager
install_cached kserve-config.tar "$KSERVE_VERSION" build_kserve_config
