#!/usr/bin/env bash
# `make kind-e2e`: the whole stack on a throwaway kind cluster, end to end. KServe in Standard (raw
# Deployment) mode, the chatterbox-tts chart with a CPU predictor serving RANDOM small weights (no download
# of real weights), a Voice from a ConfigMap synced by the operator, and one /tts/generate call.
#
# Needs: a running Docker (8 GiB of memory or more for it), kind v0.32.0 or newer, kubectl, helm 3.8+ (OCI
# charts), curl, python3, and internet access: kind's node image, cert-manager's manifest, KServe's charts,
# and the base images and packages that `make images` pulls.
# It has never run in CI, nor end to end where it was written: those machines reach package registries
# only, so kind's node image cannot be pulled there (steps 1 and 2 up to that pull were run).
#
# Environment: CLUSTER_NAME (chatterbox-e2e), KEEP_CLUSTER=1 (keep the cluster after the run, for a
# faster re-run or a look around; it is reused when it exists), KIND / KUBECTL / HELM (the binaries; by
# default bin/kubectl and bin/helm from `make tools` when present, else PATH), IMAGE_TAG /
# PREDICTOR_REPOSITORY / OPERATOR_REPOSITORY (the images are built as REPOSITORY:IMAGE_TAG),
# NAMESPACE (chatterbox), LOCAL_PORT (18080, for the port-forward), KIND_NODE_IMAGE.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=$root/build/kind-e2e

# kind v0.32.0's default node image (pkg/apis/config/defaults/image.go at that tag); the digest pins the build.
KIND_NODE_IMAGE=${KIND_NODE_IMAGE:-kindest/node:v1.36.1@sha256:3489c7674813ba5d8b1a9977baea8a6e553784dab7b84759d1014dbd78f7ebd5}
KIND_MIN_VERSION=v0.32.0  # the release the node image above was built for (kind lists its images per release)
# cert-manager 1.21 supports Kubernetes 1.33-1.36 (the node above); KServe needs 1.15 or newer.
CERT_MANAGER_VERSION=v1.21.1
# The newest KServe release whose charts were read for this script (kserve-crd, kserve-resources and
# the value kserve.controller.deploymentMode); the controller need not match the predictor's kserve SDK.
KSERVE_VERSION=v0.20.0

CLUSTER_NAME=${CLUSTER_NAME:-chatterbox-e2e}
KEEP_CLUSTER=${KEEP_CLUSTER:-0}
NAMESPACE=${NAMESPACE:-chatterbox}
LOCAL_PORT=${LOCAL_PORT:-18080}
IMAGE_TAG=${IMAGE_TAG:-0.1.0}
PREDICTOR_REPOSITORY=${PREDICTOR_REPOSITORY:-ghcr.io/chatterbox-k8s/chatterbox-predictor}
OPERATOR_REPOSITORY=${OPERATOR_REPOSITORY:-ghcr.io/chatterbox-k8s/voice-operator}
KIND=${KIND:-kind}
KUBECTL=${KUBECTL:-$([[ -x $root/bin/kubectl ]] && echo "$root/bin/kubectl" || echo kubectl)}
HELM=${HELM:-$([[ -x $root/bin/helm ]] && echo "$root/bin/helm" || echo helm)}

RELEASE=chatterbox-tts   # contains the chart's name, so the objects are named chatterbox-tts-*
ISVC=chatterbox          # predictor.name; its Service is chatterbox-predictor in both modes
VOICE_ID=e2e_voice
# Random weights never emit end-of-speech: every request caps its speech tokens (25 tokens = 1 s).
MAX_NEW_TOKENS=50

cluster_up=0
port_forward_pid=
api_key=

step() { printf '\n==> %s\n' "$*"; }
# `command`: KUBECTL may be plain "kubectl", which must not call this function again.
kubectl() { command "$KUBECTL" "$@"; }   # KUBECONFIG points at the e2e cluster only (create_cluster)
helm() { command "$HELM" "$@"; }

# until_admitted WHAT MANIFEST: waits until a server-side dry run of MANIFEST passes WHAT's webhooks (it
# creates nothing). An Available webhook Deployment may lack its CA bundle or Service endpoints for a while.
until_admitted() {
  local deadline=$((SECONDS + 180))
  until kubectl apply --dry-run=server -f - <<<"$2" >/dev/null 2>"$out/admission.log"; do
    if ((SECONDS >= deadline)); then
      echo "$1's webhook still refuses after 180 s:" >&2
      cat "$out/admission.log" >&2
      return 1
    fi
    sleep 5
  done
}

check_prerequisites() {
  step "1/7 Checking prerequisites"
  local missing=() tool version
  for tool in docker "$KIND" "$KUBECTL" "$HELM" curl python3; do
    command -v "$tool" >/dev/null 2>&1 || case $tool in
      docker) missing+=("docker: not found; install Docker Engine or Docker Desktop") ;;
      "$KIND") missing+=("kind: '$KIND' not found; go install sigs.k8s.io/kind@$KIND_MIN_VERSION, or set KIND") ;;
      "$KUBECTL") missing+=("kubectl: '$KUBECTL' not found; run make tools (builds bin/kubectl), or set KUBECTL") ;;
      "$HELM") missing+=("helm: '$HELM' not found; run make tools (builds bin/helm), or set HELM") ;;
      *) missing+=("$tool: not found") ;;
    esac
  done
  if command -v docker >/dev/null 2>&1 && ! docker info >/dev/null 2>&1; then
    missing+=("docker: the daemon does not answer (is it running, and may this user use it?)")
  fi
  if command -v "$KIND" >/dev/null 2>&1; then
    version=$("$KIND" version | awk '{print $2}')
    if [[ $(printf '%s\n' "$KIND_MIN_VERSION" "$version" | sort -V | head -1) != "$KIND_MIN_VERSION" ]]; then
      missing+=("kind: $version is older than $KIND_MIN_VERSION; go install sigs.k8s.io/kind@$KIND_MIN_VERSION")
    fi
  fi
  if ((${#missing[@]})); then
    printf 'missing prerequisites:\n' >&2
    printf '  - %s\n' "${missing[@]}" >&2
    exit 1
  fi
  echo "docker, $KIND, $KUBECTL, $HELM, curl and python3 found"
}

create_cluster() {
  step "2/7 kind cluster $CLUSTER_NAME"
  mkdir -p "$out"
  cluster_up=1
  if "$KIND" get clusters 2>/dev/null | grep -qx "$CLUSTER_NAME"; then
    echo "reusing the existing cluster $CLUSTER_NAME"
  else
    "$KIND" create cluster --name "$CLUSTER_NAME" --image "$KIND_NODE_IMAGE" --wait 180s
  fi
  # A kubeconfig of our own: the user's current context is never touched nor used.
  "$KIND" get kubeconfig --name "$CLUSTER_NAME" >"$out/kubeconfig"
  export KUBECONFIG=$out/kubeconfig
  kubectl get nodes
}

install_kserve() {
  step "3/7 cert-manager $CERT_MANAGER_VERSION and KServe $KSERVE_VERSION (Standard mode, no Knative/Istio)"
  kubectl apply -f "https://github.com/cert-manager/cert-manager/releases/download/$CERT_MANAGER_VERSION/cert-manager.yaml"
  kubectl -n cert-manager wait --for=condition=Available deployment --all --timeout=300s
  # KServe's chart creates an Issuer and a Certificate: cert-manager's webhook must admit them.
  until_admitted cert-manager 'apiVersion: cert-manager.io/v1
kind: ClusterIssuer
metadata: {name: e2e-webhook-probe}
spec: {selfSigned: {}}'
  helm upgrade --install kserve-crd oci://ghcr.io/kserve/charts/kserve-crd --version "$KSERVE_VERSION" \
    --namespace kserve --create-namespace --wait
  # Standard is v0.20's name for RawDeployment (the chart's InferenceService says Standard too). No Ingress: kind has
  # no ingress controller, and the test reaches the predictor through a port-forward.
  helm upgrade --install kserve-resources oci://ghcr.io/kserve/charts/kserve-resources \
    --version "$KSERVE_VERSION" --namespace kserve --wait --timeout 10m \
    --set kserve.controller.deploymentMode=Standard \
    --set kserve.controller.gateway.disableIngressCreation=true
  kubectl -n kserve wait --for=condition=Available deployment/kserve-controller-manager --timeout=300s
  # Our chart creates an InferenceService: KServe's webhook must admit one.
  until_admitted KServe "apiVersion: serving.kserve.io/v1beta1
kind: InferenceService
metadata: {name: e2e-webhook-probe, namespace: default}
spec: {predictor: {containers: [{name: kserve-container, image: $PREDICTOR_REPOSITORY:$IMAGE_TAG}]}}"
}

build_and_load_images() {
  step "4/7 make images, then kind load ($IMAGE_TAG)"
  PREDICTOR_IMAGE="$PREDICTOR_REPOSITORY:$IMAGE_TAG" OPERATOR_IMAGE="$OPERATOR_REPOSITORY:$IMAGE_TAG" \
    make -C "$root" images
  "$KIND" load docker-image --name "$CLUSTER_NAME" "$PREDICTOR_REPOSITORY:$IMAGE_TAG" "$OPERATOR_REPOSITORY:$IMAGE_TAG"
}

install_chart() {
  step "5/7 helm install $RELEASE (CPU, random small weights) into $NAMESPACE"
  # A re-run on a kept cluster keeps the key already in the Secret: a new one would reach the predictor's
  # mounted key file only at the kubelet's next sync, up to a minute later.
  api_key=$(kubectl -n "$NAMESPACE" get secret "$RELEASE-api-key" \
    -o go-template='{{index .data "api-key" | base64decode}}' 2>/dev/null || true)
  [[ -n $api_key ]] || api_key=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
  # pullPolicy Never: the images exist only inside the node (kind load); a failed load shows as
  # ErrImageNeverPull instead of a pull from a registry that may hold another build.
  cat >"$out/values.yaml" <<EOF
predictor:
  mode: InferenceService
  name: $ISVC
  image: {repository: $PREDICTOR_REPOSITORY, tag: "$IMAGE_TAG", pullPolicy: Never}
  gpu: 0
  randomWeights: small
  storageUri: ""
  # Building and loading the small random checkpoint peaked near 5 GiB of RSS on a CPU (measured); the
  # request leaves room on a Docker VM of 8 GiB, the chart's defaults are sized for real weights.
  resources:
    requests: {cpu: 500m, memory: 3Gi}
    limits: {memory: 8Gi}
operator:
  image: {repository: $OPERATOR_REPOSITORY, tag: "$IMAGE_TAG", pullPolicy: Never}
voices:
  accessModes: [ReadWriteOnce]   # kind's "standard" class (local-path) offers nothing else; one node
  size: 1Gi
EOF
  helm upgrade --install "$RELEASE" "$root/charts/chatterbox-tts" --namespace "$NAMESPACE" --create-namespace \
    --values "$out/values.yaml" --set-string "apiKey.value=$api_key"
  # Generous: the first start builds the random checkpoint and its built-in voice on the CPU.
  kubectl -n "$NAMESPACE" wait --for=condition=Ready "isvc/$ISVC" --timeout=900s
  kubectl -n "$NAMESPACE" wait --for=condition=Available deployment --all --timeout=300s
}

apply_voice() {
  step "6/7 Voice $VOICE_ID from a ConfigMap"
  # A real voice file: the random checkpoint's built-in voice (conds.pt, saved by the library's
  # Conditionals.save), found under the model cache directory the predictor's settings name.
  kubectl -n "$NAMESPACE" exec "svc/$ISVC-predictor" -c kserve-container -- python -c '
import sys
from chatterbox_predictor.settings import PredictorSettings
cache = PredictorSettings.load().model_cache_dir
found = sorted(cache.glob("random/*/conds.pt"))
if not found:
    sys.exit(f"no random checkpoint with a conds.pt under {cache}")
sys.stdout.buffer.write(found[0].read_bytes())' >"$out/voice.pth"
  echo "voice.pth: $(wc -c <"$out/voice.pth") bytes"
  # Server-side apply: a client-side apply would copy the binary into an annotation (256 KiB at most).
  kubectl -n "$NAMESPACE" create configmap e2e-voice --from-file=voice.pth="$out/voice.pth" \
    --dry-run=client -o yaml | kubectl apply --server-side --force-conflicts -f -
  kubectl -n "$NAMESPACE" apply -f - <<EOF
apiVersion: tts.chatterbox-k8s.io/v1alpha1
kind: Voice
metadata: {name: e2e-voice}
spec:
  voiceId: $VOICE_ID
  source: {configMap: {name: e2e-voice, key: voice.pth}}
  inferenceService: $ISVC
EOF
  kubectl -n "$NAMESPACE" wait --for=jsonpath='{.status.phase}'=Ready voice/e2e-voice --timeout=300s
  kubectl -n "$NAMESPACE" get voice e2e-voice
}

call_api() {
  step "7/7 POST /tts/generate and GET /voices through a port-forward"
  local port url status
  port=$(kubectl -n "$NAMESPACE" get svc "$ISVC-predictor" -o jsonpath='{.spec.ports[0].port}')
  kubectl -n "$NAMESPACE" port-forward "svc/$ISVC-predictor" "$LOCAL_PORT:$port" >"$out/port-forward.log" 2>&1 &
  port_forward_pid=$!
  url=http://127.0.0.1:$LOCAL_PORT
  for _ in $(seq 30); do curl -s -o /dev/null "$url/health" && break; sleep 1; done
  status=$(curl -sS --max-time 600 -o "$out/e2e.wav" -w '%{http_code}' -H "X-API-Key: $api_key" \
    -H 'Content-Type: application/json' "$url/tts/generate" \
    -d "{\"text\": \"Hello from a kind cluster.\", \"voice_id\": \"$VOICE_ID\", \"max_new_tokens\": $MAX_NEW_TOKENS, \"seed\": 0}")
  if [[ $status != 200 ]]; then
    echo "/tts/generate answered $status: $(head -c 2000 "$out/e2e.wav")" >&2
    return 1
  fi
  python3 - "$out/e2e.wav" <<'EOF'
import struct, sys
data = open(sys.argv[1], "rb").read()
start = data.find(b"data", 12) + 8  # the PCM follows the data chunk's header
if data[:4] != b"RIFF" or data[8:12] != b"WAVE" or start < 8 or len(data) <= start:
    sys.exit(f"{sys.argv[1]} is not a WAV with audio ({len(data)} bytes)")
rate, = struct.unpack("<I", data[24:28])
print(f"{sys.argv[1]}: {len(data)} bytes, {(len(data) - start) / 2 / rate:.2f} s of 16-bit audio at {rate} Hz")
EOF
  curl -sS --fail --max-time 30 -H "X-API-Key: $api_key" "$url/voices" | python3 -c "
import json, sys
voices = json.load(sys.stdin)
print('GET /voices:', voices)
sys.exit(0 if '$VOICE_ID.pth' in voices else 'the Voice is not listed')"
}

diagnostics() {
  echo $'\n==> The run failed; the cluster as it stands:' >&2
  local run
  for run in "get nodes" "-n kserve get pods" "-n $NAMESPACE get isvc,deploy,pods,pvc,voices,configmaps" \
    "-n $NAMESPACE describe isvc $ISVC" "-n $NAMESPACE describe pods" "-n $NAMESPACE describe voices" \
    "-n $NAMESPACE get events --sort-by=.lastTimestamp" \
    "-n $NAMESPACE logs deployment/$ISVC-predictor --all-containers --tail=80" \
    "-n $NAMESPACE logs deployment/$RELEASE-operator --tail=80" \
    "-n kserve logs deployment/kserve-controller-manager --tail=40"; do
    echo "--- kubectl $run" >&2
    # shellcheck disable=SC2086  # each entry is a list of words
    kubectl $run >&2 || true
  done
  [[ ! -s $out/port-forward.log ]] || { echo "--- port-forward" >&2; cat "$out/port-forward.log" >&2; }
}

on_exit() {
  local rc=$?
  [[ -z $port_forward_pid ]] || kill "$port_forward_pid" 2>/dev/null || true
  if ((rc != 0)) && [[ ${KUBECONFIG:-} == "$out/kubeconfig" ]]; then  # never a user's own cluster
    diagnostics
  fi
  if ((cluster_up)); then
    if [[ $KEEP_CLUSTER == 1 ]]; then
      echo "kept: kind cluster $CLUSTER_NAME (KUBECONFIG=$out/kubeconfig); delete with: $KIND delete cluster --name $CLUSTER_NAME"
    else
      "$KIND" delete cluster --name "$CLUSTER_NAME" || true
    fi
  fi
  if ((rc == 0)); then
    printf '\nkind-e2e passed: %s\n' "$out/e2e.wav"
  else
    printf '\nkind-e2e FAILED (exit %s)\n' "$rc" >&2
  fi
  exit "$rc"
}

main() {
  trap on_exit EXIT
  trap 'exit 130' INT TERM   # so that an interrupted run still cleans up
  check_prerequisites
  create_cluster
  install_kserve
  build_and_load_images
  install_chart
  apply_voice
  call_api
}

main "$@"
