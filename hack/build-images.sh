#!/usr/bin/env bash
# Builds the images with Docker's classic builder (Debian ships no buildx): `hack/build-images.sh
# [predictor] [operator]`, both by default. The tags are PREDICTOR_IMAGE and OPERATOR_IMAGE (defaults:
# the chart's images at the chart's appVersion), so the chart runs what was built here.
#
# Where no registry can be reached, hack/base-image.sh supplies a stand-in for the base image first.
# The CA certificates added to this machine (/usr/local/share/ca-certificates, e.g. a TLS-intercepting
# proxy's) go to pip in the build stages only, as the EXTRA_CA_CERTS build argument: the runtime
# images keep the base's own bundle. The whole system bundle would be too long for one argument.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
# The chart's appVersion is the image tag a plain `helm install` asks for.
version=$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' "$root/charts/chatterbox-tts/Chart.yaml" 2>/dev/null || true)
tag=${IMAGE_TAG:-${version:-0.1.0}}
PREDICTOR_IMAGE=${PREDICTOR_IMAGE:-ghcr.io/chatterbox-k8s/chatterbox-predictor:$tag}
OPERATOR_IMAGE=${OPERATOR_IMAGE:-ghcr.io/chatterbox-k8s/voice-operator:$tag}
LOG_DIR=${LOG_DIR:-$root/build/images}
export DOCKER_BUILDKIT=0

log() { printf '[build-images] %s\n' "$*" >&2; }

bash "$root/hack/docker-engine.sh"
bash "$root/hack/base-image.sh" >&2
mkdir -p "$LOG_DIR"

extra_ca=""
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
  extra_ca=$(cat /usr/local/share/ca-certificates/*.crt)
fi

targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(predictor operator)
for t in "${targets[@]}"; do
  case $t in
    predictor) image=$PREDICTOR_IMAGE ;;
    operator) image=$OPERATOR_IMAGE ;;
    *) log "unknown image '$t' (predictor or operator)"; exit 2 ;;
  esac
  start=$(date +%s)
  log "building $image (Dockerfile.$t; log: $LOG_DIR/$t.log)"
  # BUILD_ARGS: more `docker build` arguments, split on spaces (e.g. --build-arg CHECKPOINT_DIR=dir).
  # shellcheck disable=SC2086
  if ! docker build -f "$root/Dockerfile.$t" --build-arg EXTRA_CA_CERTS="$extra_ca" ${BUILD_ARGS:-} \
      -t "$image" "$root" >"$LOG_DIR/$t.log" 2>&1; then
    tail -n 40 "$LOG_DIR/$t.log" >&2
    log "building $image failed"
    exit 1
  fi
  size=$(docker image inspect -f '{{.Size}}' "$image" | numfmt --to=iec)
  log "$image built in $(( $(date +%s) - start )) s, $size"
  # The classic builder keeps its cache as untagged stage images, which `docker image prune` removes:
  # tagging the dependency stage (a cache hit, instant) keeps the slow layer through a prune.
  stage=$([ "$t" = predictor ] && echo deps || echo builder)
  # shellcheck disable=SC2086
  docker build -q --target "$stage" -f "$root/Dockerfile.$t" --build-arg EXTRA_CA_CERTS="$extra_ca" \
    ${BUILD_ARGS:-} -t "$image-$stage" "$root" >/dev/null 2>&1 || log "could not tag $image-$stage"
done
