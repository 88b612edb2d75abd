#!/usr/bin/env bash
# `hack/system-deps.sh COMMAND...`: installs the Debian package that provides each COMMAND missing from
# PATH (root only; elsewhere it names the packages and fails). Each caller asks for what it needs:
#   dockerd      docker.io: the engine that builds and runs the images (hack/docker-engine.sh);
#   debootstrap  a stand-in base image where no registry can be reached (hack/base-image.sh);
#   ffprobe      ffmpeg: the image tier checks that the audio a container returns decodes;
#   espeak-ng    espeak-ng: real speech in several voices for the cloning tests (tests/support/speech.py);
#   chromium     chromium (and a font to render text with): the browser tier drives it with Playwright.
# and for the cluster tier's node (tests/support/node.py):
#   containerd   containerd (with runc): the node's container runtime, started apart from Docker's;
#   cni-bridge   containernetworking-plugins: the pod network (bridge, host-local, portmap, loopback);
#   iptables, conntrack: kube-proxy's Service rules and their cleanup;
#   busybox      busybox-static: the shell inside the local-path-provisioner image (hack/node-images.sh);
#   gcc          gcc and libc6-dev (whose libc.a links the sandbox's pause program static).
set -euo pipefail

declare -A package_of=([dockerd]=docker.io [debootstrap]=debootstrap [ffprobe]=ffmpeg [espeak-ng]=espeak-ng
  [chromium]="chromium fonts-dejavu-core"
  [containerd]=containerd [runc]=runc [cni-bridge]=containernetworking-plugins [iptables]=iptables
  [conntrack]=conntrack [busybox]=busybox-static [ip]=iproute2 [gcc]="gcc libc6-dev")
# Commands that are not on PATH under their own name.
declare -A path_of=([cni-bridge]=/usr/lib/cni/bridge)
missing=()
for command in "$@"; do
  [ -n "${package_of[$command]:-}" ] || { echo "[system-deps] no package known for '$command'" >&2; exit 2; }
  read -ra packages <<<"${package_of[$command]}"  # one command may need several packages
  if [ -n "${path_of[$command]:-}" ]; then
    [ -x "${path_of[$command]}" ] || missing+=("${packages[@]}")
  else
    command -v "$command" >/dev/null || missing+=("${packages[@]}")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" != 0 ]; then
  echo "[system-deps] missing: ${missing[*]}; as root: apt-get install ${missing[*]}" >&2
  exit 1
fi
echo "[system-deps] installing ${missing[*]}" >&2
apt-get update -q >/dev/null
DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
