#!/usr/bin/env bash
# Supplies the Dockerfiles' base image, python:3.11-slim-bookworm, to the local Docker engine, so that
# the Dockerfiles build unchanged where no image registry can be reached (hack/build-images.sh runs it).
# 1. If the image is already there: nothing to do.
# 2. Else try `docker pull` (works wherever a registry is reachable).
# 3. Else build a STAND-IN from Debian bookworm packages with debootstrap (minbase + python3 3.11,
#    python3-venv, python3-pip, ca-certificates), laid out like the official image
#    (/usr/local/bin/python, python3, python3.11, pip, pip3), and `docker import` it under that name.
# Needs root, a running dockerd and debootstrap (hack/docker-engine.sh). Env: BASE_IMAGE, DEBIAN_MIRROR,
# WORKDIR (scratch space for the root file system and debootstrap's package cache).
set -euo pipefail

IMAGE="${BASE_IMAGE:-python:3.11-slim-bookworm}"
WORKDIR="${WORKDIR:-${XDG_CACHE_HOME:-$HOME/.cache}/chatterbox-k8s-base}"

log() { echo "[base-image] $*"; }

if docker image inspect "$IMAGE" >/dev/null 2>&1; then
    desc=$(docker image inspect -f '{{index .Config.Labels "org.opencontainers.image.description"}}' "$IMAGE" 2>/dev/null || true)
    log "$IMAGE already present${desc:+ ($desc)}; nothing to do"
    exit 0
fi

if timeout 120 docker pull "$IMAGE" >/dev/null 2>&1; then
    log "$IMAGE pulled from its registry"
    exit 0
fi
log "cannot pull $IMAGE (no registry reachable): building a STAND-IN from Debian bookworm packages"
bash "$(dirname "$0")/system-deps.sh" debootstrap

# The Debian mirror apt uses on this machine (deb822 .sources or one-line .list), else the default.
mirror="${DEBIAN_MIRROR:-}"
if [ -z "$mirror" ]; then
    mirror=$(grep -hsE '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' | grep -E '/debian/?$' | head -n1 || true)
fi
if [ -z "$mirror" ]; then
    mirror=$(grep -hsE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list | awk '{print $2}' | grep -E '/debian/?$' | head -n1 || true)
fi
mirror="${mirror:-http://deb.debian.org/debian}"
log "mirror: $mirror"

rootfs="$WORKDIR/rootfs"
case "$rootfs" in /*/rootfs) ;; *) echo "bad WORKDIR: $WORKDIR" >&2; exit 1 ;; esac
rm -rf "$rootfs"
mkdir -p "$rootfs" "$WORKDIR/debootstrap-cache"
start=$(date +%s)
debootstrap --variant=minbase \
    --include=python3,python3-venv,python3-pip,ca-certificates,netbase,tzdata \
    --cache-dir="$WORKDIR/debootstrap-cache" \
    bookworm "$rootfs" "$mirror" > "$WORKDIR/debootstrap.log" 2>&1 \
    || { tail -n 30 "$WORKDIR/debootstrap.log"; exit 1; }
log "debootstrap done in $(( $(date +%s) - start )) s"

# The official image's layout: its Python lives in /usr/local/bin; pip may install system-wide.
for name in python python3 python3.11; do ln -sf /usr/bin/python3.11 "$rootfs/usr/local/bin/$name"; done
for name in pip pip3 pip3.11; do ln -sf /usr/bin/pip3 "$rootfs/usr/local/bin/$name"; done
rm -f "$rootfs"/usr/lib/python3.11/EXTERNALLY-MANAGED
# Same apt sources as the official image (bookworm, -updates, -security), lists and caches emptied.
rm -f "$rootfs/etc/apt/sources.list"
cat > "$rootfs/etc/apt/sources.list.d/debian.sources" <<'EOF'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
# Slim like debian:bookworm-slim: no docs, man pages or translations, now or from later installs.
cat > "$rootfs/etc/dpkg/dpkg.cfg.d/docker-slim" <<'SLIM'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
SLIM
chroot "$rootfs" apt-get clean
find "$rootfs/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete
find "$rootfs/usr/share/doc" -mindepth 1 -type d -empty -delete
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/log/*.log \
       "$rootfs"/usr/share/man/* "$rootfs"/usr/share/groff/* "$rootfs"/usr/share/info/* \
       "$rootfs"/usr/share/lintian/* "$rootfs"/usr/share/locale/* "$rootfs"/tmp/*

tar --numeric-owner -C "$rootfs" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'ENV PYTHON_VERSION=3.11' \
    --change 'LABEL org.opencontainers.image.description="STAND-IN for python:3.11-slim-bookworm, built from Debian bookworm packages by debootstrap"' \
    --change 'CMD ["python3"]' \
    -m "stand-in for $IMAGE (debootstrap minbase bookworm + python3)" \
    - "$IMAGE" >/dev/null
rm -rf "$rootfs"
log "STAND-IN $IMAGE imported in $(( $(date +%s) - start )) s: $(docker image inspect -f '{{.Size}}' "$IMAGE" | numfmt --to=iec) ($(docker run --rm "$IMAGE" python --version 2>&1))"
