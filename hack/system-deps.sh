#!/usr/bin/env bash
# Installs the Debian packages that `make test` and `make images` need beyond Python and Go, when any is
# missing (root only; elsewhere it names them and fails):
#   docker.io    the engine that builds and runs the images (the image tier);
#   debootstrap  a stand-in base image where no registry can be reached (hack/base-image.sh);
#   ffmpeg       ffprobe, which checks that the WAV a container returns decodes.
set -euo pipefail

declare -A needs=([docker.io]=dockerd [debootstrap]=debootstrap [ffmpeg]=ffprobe)
missing=()
for package in "${!needs[@]}"; do
  command -v "${needs[$package]}" >/dev/null || missing+=("$package")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" != 0 ]; then
  echo "[system-deps] missing: ${missing[*]}; as root: apt-get install ${missing[*]}" >&2
  exit 1
fi
echo "[system-deps] installing ${missing[*]}" >&2
apt-get update -q >/dev/null
DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
