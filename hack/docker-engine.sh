#!/usr/bin/env bash
# Makes sure a Docker engine answers: when none does, installs Debian's docker.io if missing
# (hack/system-deps.sh) and starts dockerd as root with overlay2. Idempotent; the image targets and
# the image test tier call it first.
# Log of a dockerd started here: $DOCKERD_LOG (default /var/log/chatterbox-dockerd.log).
set -euo pipefail

log() { printf '[docker-engine] %s\n' "$*" >&2; }
DOCKERD_LOG=${DOCKERD_LOG:-/var/log/chatterbox-dockerd.log}

# Any engine that answers will do (Docker Desktop, rootless, remote): nothing to install or start.
if docker info >/dev/null 2>&1; then
  exit 0
fi
bash "$(dirname "$0")/system-deps.sh" dockerd
if [ "$(id -u)" != 0 ]; then
  log "dockerd is not running and only root can start it (systemctl start docker, or dockerd &)"
  exit 1
fi
log "starting dockerd (overlay2), log: $DOCKERD_LOG"
nohup dockerd --storage-driver=overlay2 >"$DOCKERD_LOG" 2>&1 &
for _ in $(seq 1 120); do  # up to 60 s; it answers within a second here
  if docker info >/dev/null 2>&1; then
    log "dockerd $(docker info -f '{{.ServerVersion}}') is up"
    exit 0
  fi
  sleep 0.5
done
log "dockerd did not come up; the end of $DOCKERD_LOG:"
tail -n 20 "$DOCKERD_LOG" >&2
exit 1
