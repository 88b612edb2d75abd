#!/usr/bin/env bash
# `hack/system-deps.sh COMMAND...`: installs the Debian package that provides each COMMAND missing from
# PATH (root only; elsewhere it names the packages and fails). Each caller asks for what it needs:
#   dockerd      docker.io: the engine that builds and runs the images (hack/docker-engine.sh);
#   debootstrap  a stand-in base image where no registry can be reached (hack/base-image.sh);
#   ffprobe      ffmpeg: the image tier checks that the audio a container returns decodes.
set -euo pipefail

declare -A package_of=([dockerd]=docker.io [debootstrap]=debootstrap [ffprobe]=ffmpeg)
missing=()
for command in "$@"; do
  [ -n "${package_of[$command]:-}" ] || { echo "[system-deps] no package known for '$command'" >&2; exit 2; }
  command -v "$command" >/dev/null || missing+=("${package_of[$command]}")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" != 0 ]; then
  echo "[system-deps] missing: ${missing[*]}; as root: apt-get install ${missing[*]}" >&2
  exit 1
fi
echo "[system-deps] installing ${missing[*]}" >&2
apt-get update -q >/dev/null
DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
