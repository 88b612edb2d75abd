#!/usr/bin/env bash
# Builds the two small images the cluster tier's node needs and no registry can give it here, into the
# Docker engine (tests/support/node.py moves them into the node's containerd):
#   chatterbox-test/pause:1                     the pod sandbox: hack/node/pause.c, linked static;
#   chatterbox-test/local-path-provisioner:VER  Rancher's local-path-provisioner (k3s's default storage,
#                                               built by `make tools`) and a static busybox, whose shell
#                                               runs the provisioner's helper pods (mkdir, rm);
#   chatterbox-test/kserve-manager:VER          KServe's controller manager (built by `make tools`), for
#                                               the InferenceService mode.
# Each is a one-layer image made with `docker import` from a directory; rebuilt only when missing.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=tools.env
source "$root/hack/tools.env"
bin_dir=${BIN_DIR:-$root/bin}
PAUSE_IMAGE=${PAUSE_IMAGE:-chatterbox-test/pause:1}
PROVISIONER_IMAGE=${PROVISIONER_IMAGE:-chatterbox-test/local-path-provisioner:$LOCAL_PATH_PROVISIONER_VERSION}
KSERVE_IMAGE=${KSERVE_IMAGE:-chatterbox-test/kserve-manager:$KSERVE_VERSION}

log() { printf '[node-images] %s\n' "$*" >&2; }

bash "$root/hack/docker-engine.sh"
bash "$root/hack/system-deps.sh" busybox gcc

have() { docker image inspect "$1" >/dev/null 2>&1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if ! have "$PAUSE_IMAGE"; then
  mkdir -p "$work/pause"
  gcc -static -O2 -Wall -Wextra -Werror -o "$work/pause/pause" "$root/hack/node/pause.c"
  tar -C "$work/pause" -c . | docker import --change 'ENTRYPOINT ["/pause"]' - "$PAUSE_IMAGE" >/dev/null
  log "$PAUSE_IMAGE imported"
fi

if ! have "$PROVISIONER_IMAGE"; then
  [ -x "$bin_dir/local-path-provisioner" ] || { log "$bin_dir/local-path-provisioner is missing: run make tools"; exit 1; }
  rootfs=$work/provisioner
  mkdir -p "$rootfs/bin" "$rootfs/usr/bin" "$rootfs/tmp" "$rootfs/etc"
  busybox=$(command -v busybox)
  # The image holds no libc: only a static busybox runs there (Debian's busybox-static, not busybox).
  if ldd "$busybox" >/dev/null 2>&1; then
    log "$busybox is linked dynamically; install busybox-static"
    exit 1
  fi
  cp "$busybox" "$rootfs/bin/busybox"
  # The applets the helper pods' scripts and a debugging `kubectl exec` use.
  for applet in sh mkdir rm rmdir ls cat chmod chown mv cp stat test sleep; do
    ln -s busybox "$rootfs/bin/$applet"
  done
  cp "$bin_dir/local-path-provisioner" "$rootfs/usr/bin/local-path-provisioner"
  tar -C "$rootfs" -c . | docker import --change 'ENTRYPOINT ["/usr/bin/local-path-provisioner"]' \
    --change 'ENV PATH=/usr/bin:/bin' - "$PROVISIONER_IMAGE" >/dev/null
  log "$PROVISIONER_IMAGE imported"
fi

if ! have "$KSERVE_IMAGE"; then
  [ -x "$bin_dir/kserve-manager" ] || { log "$bin_dir/kserve-manager is missing: run make tools"; exit 1; }
  mkdir -p "$work/kserve/tmp"
  chmod 1777 "$work/kserve/tmp"  # the webhook server's certificates are mounted under /tmp
  cp "$bin_dir/kserve-manager" "$work/kserve/manager"
  tar -C "$work/kserve" -c . | docker import --change 'ENTRYPOINT ["/manager"]' --change 'USER 65532' \
    - "$KSERVE_IMAGE" >/dev/null
  log "$KSERVE_IMAGE imported"
fi
