{{/*
Names. Kubernetes object names used here end up in DNS labels (Services, label values), which hold at
most 63 characters: every name below is truncated to 63 and stripped of a trailing "-" (a label may
not end in one).
*/}}

{{/* chatterbox-tts.name: the chart's name, or nameOverride. */}}
{{- define "chatterbox-tts.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
chatterbox-tts.fullname: the prefix of every object this release names itself: fullnameOverride, else
the release name (when it already contains the chart's name), else "<release>-<chart name>".
*/}}
{{- define "chatterbox-tts.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* chatterbox-tts.chart: "<name>-<version>" for the helm.sh/chart label ("+" is not allowed in labels). */}}
{{- define "chatterbox-tts.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
chatterbox-tts.labels: the common labels of every object; pass (dict "ctx" $ "component" "operator").
app.kubernetes.io/instance is what tests and users select a release's objects by.
*/}}
{{- define "chatterbox-tts.labels" -}}
helm.sh/chart: {{ include "chatterbox-tts.chart" .ctx }}
{{ include "chatterbox-tts.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: chatterbox
{{- end -}}

{{/*
chatterbox-tts.selectorLabels: the labels a Deployment selects its pods by. They never change between
upgrades (a Deployment's selector is immutable), so no version in them.
*/}}
{{- define "chatterbox-tts.selectorLabels" -}}
app.kubernetes.io/name: {{ include "chatterbox-tts.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
{{- with .component }}
app.kubernetes.io/component: {{ . }}
{{- end }}
{{- end -}}

{{/* chatterbox-tts.operator.fullname: the operator's Deployment and RBAC objects. */}}
{{- define "chatterbox-tts.operator.fullname" -}}
{{- printf "%s-operator" (include "chatterbox-tts.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* chatterbox-tts.operator.serviceAccountName: operator.serviceAccount.name, else the operator's fullname. */}}
{{- define "chatterbox-tts.operator.serviceAccountName" -}}
{{- default (include "chatterbox-tts.operator.fullname" .) .Values.operator.serviceAccount.name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* chatterbox-tts.operator.peering: the kopf peering object's name (the operator creates it). */}}
{{- define "chatterbox-tts.operator.peering" -}}
{{- default (include "chatterbox-tts.operator.fullname" .) .Values.operator.peering -}}
{{- end -}}

{{/*
chatterbox-tts.operator.namespaces: the namespaces the operator serves, as a list (a JSON array; read it
with fromJsonArray): operator.watchNamespaces, else the release namespace. Empty with allNamespaces.
*/}}
{{- define "chatterbox-tts.operator.namespaces" -}}
{{- if .Values.operator.allNamespaces -}}
[]
{{- else -}}
{{- default (list .Release.Namespace) .Values.operator.watchNamespaces | uniq | toJson -}}
{{- end -}}
{{- end -}}

{{/*
chatterbox-tts.predictor.service: the predictor's Service, "<predictor.name>-predictor" in both modes:
KServe names an InferenceService's predictor Service so, and the operator finds replicas by that name
(its default VOICE_OPERATOR_PREDICTOR_SERVICE is "{name}-predictor", {name} being a Voice's
spec.inferenceService). The schema caps predictor.name at 53 characters so that this fits 63.
*/}}
{{- define "chatterbox-tts.predictor.service" -}}
{{- printf "%s-predictor" .Values.predictor.name -}}
{{- end -}}

{{/* chatterbox-tts.predictor.serviceAccountName: predictor.serviceAccount.name, else "<fullname>-predictor". */}}
{{- define "chatterbox-tts.predictor.serviceAccountName" -}}
{{- $default := printf "%s-predictor" (include "chatterbox-tts.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- default $default .Values.predictor.serviceAccount.name -}}
{{- end -}}

{{/* chatterbox-tts.voices.claimName: voices.existingClaim, else the claim this chart creates. */}}
{{- define "chatterbox-tts.voices.claimName" -}}
{{- if .Values.voices.existingClaim -}}
{{- .Values.voices.existingClaim -}}
{{- else -}}
{{- printf "%s-voices" (include "chatterbox-tts.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* chatterbox-tts.apiKey.secretName: apiKey.existingSecret, else the Secret this chart creates. */}}
{{- define "chatterbox-tts.apiKey.secretName" -}}
{{- if .Values.apiKey.existingSecret -}}
{{- .Values.apiKey.existingSecret -}}
{{- else -}}
{{- printf "%s-api-key" (include "chatterbox-tts.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/*
chatterbox-tts.huggingface.secretName: huggingface.existingSecret, else the Secret this chart creates
from huggingface.token, else empty (no token: public weights only).
*/}}
{{- define "chatterbox-tts.huggingface.secretName" -}}
{{- if .Values.huggingface.existingSecret -}}
{{- .Values.huggingface.existingSecret -}}
{{- else if .Values.huggingface.token -}}
{{- printf "%s-huggingface" (include "chatterbox-tts.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* chatterbox-tts.image: "<repository>:<tag>", the tag defaulting to the chart's appVersion; pass (dict "ctx" $ "image" .Values.x.image). */}}
{{- define "chatterbox-tts.image" -}}
{{- printf "%s:%s" .image.repository (default .ctx.Chart.AppVersion .image.tag) -}}
{{- end -}}

{{/*
chatterbox-tts.keyFile: where the API key Secret is mounted in both the predictor and the operator. The
predictor re-reads the file when the kubelet updates it, and the operator reads it before each reload
request, so a rotated key needs no restart.
*/}}
{{- define "chatterbox-tts.keyDir" -}}/var/run/secrets/chatterbox{{- end -}}
{{- define "chatterbox-tts.keyFile" -}}{{ include "chatterbox-tts.keyDir" . }}/api-key{{- end -}}

{{/*
chatterbox-tts.operator.rules: what the operator may do where it serves Voices; pass (dict "ctx" $
"clusterwide" bool). The same rules go into the ClusterRole (allNamespaces) or into one Role per
watched namespace, so that the two modes differ only in where they apply.
*/}}
{{- define "chatterbox-tts.operator.rules" -}}
# Watch Voices (list + watch), read one to tell whether a claimed voice id's owner still exists (get),
# and write kopf's finalizer and progress annotations on them (patch).
- apiGroups: [tts.chatterbox-k8s.io]
  resources: [voices]
  verbs: [get, list, watch, patch]
# Publish phase, conditions, checksum and size.
- apiGroups: [tts.chatterbox-k8s.io]
  resources: [voices/status]
  verbs: [patch]
# One event per step (Synced, Reloaded, ChecksumMismatch, Drift, ...), for kubectl describe.
- apiGroups: [""]
  resources: [events]
  verbs: [create]
{{- if .ctx.Values.operator.readSecrets }}
# Voice sources of kind configMap and secret. Reading Secrets is the price of the secret source:
# operator.readSecrets=false drops them (such a Voice then waits with reason SourceForbidden).
- apiGroups: [""]
  resources: [configmaps, secrets]
  verbs: [get]
{{- else }}
# Voice sources of kind configMap (operator.readSecrets is off: a Voice with a secret source waits
# with reason SourceForbidden).
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get]
{{- end }}
# The addresses of ready predictor replicas, to ask each to reload.
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [list]
# kopf peering: replicas announce themselves here, and all but one pause (safe with replicas > 1);
# the operator creates the peering object at start when it is missing. Cluster-wide operators meet in
# a ClusterKopfPeering, namespaced ones in a KopfPeering in each namespace they serve; the ClusterRole
# grants both, as its holder may also be narrowed to some namespaces (VOICE_OPERATOR_NAMESPACES).
- apiGroups: [kopf.dev]
  resources: [{{ if .clusterwide }}clusterkopfpeerings, {{ end }}kopfpeerings]
  verbs: [get, list, watch, patch, create]
{{- end -}}

{{/*
chatterbox-tts.predictor.container: the predictor container, the same in both modes (KServe's custom
predictor container must be named kserve-container). Its image runs `python -m chatterbox_predictor`,
KServe's model server with our flags; every setting comes in as a CHATTERBOX_* variable.
*/}}
{{- define "chatterbox-tts.predictor.container" -}}
{{- $p := .Values.predictor -}}
{{- $hf := include "chatterbox-tts.huggingface.secretName" . -}}
name: kserve-container
image: {{ include "chatterbox-tts.image" (dict "ctx" $ "image" $p.image) }}
imagePullPolicy: {{ $p.image.pullPolicy }}
env:
  - {name: CHATTERBOX_VARIANT, value: {{ $p.variant | quote }}}
  - {name: CHATTERBOX_RANDOM_WEIGHTS, value: {{ $p.randomWeights | quote }}}
  - {name: CHATTERBOX_DEVICE, value: {{ $p.device | quote }}}
  - {name: CHATTERBOX_DTYPE, value: {{ $p.dtype | quote }}}
  - {name: CHATTERBOX_S3GEN_DTYPE, value: {{ $p.s3genDtype | quote }}}
  - {name: CHATTERBOX_VOICES_DIR, value: /voices}
  # Hub downloads, generated checkpoints and compiled code go to an emptyDir (the root file system is
  # read-only). numba: librosa compiles with cache=True at import, and numba refuses to import where it
  # cannot write that cache. HOME too: libraries that write under ~ (spacy-pkuseg's model for Chinese
  # text in ~/.pkuseg, ~/.cache) find it writable.
  - {name: HOME, value: /var/cache/chatterbox/home}
  - {name: CHATTERBOX_MODEL_CACHE_DIR, value: /var/cache/chatterbox}
  - {name: HF_HOME, value: /var/cache/chatterbox/huggingface}
  - {name: NUMBA_CACHE_DIR, value: /var/cache/chatterbox/numba}
  - {name: XDG_CACHE_HOME, value: /var/cache/chatterbox/xdg}
  - {name: CHATTERBOX_API_KEYS_FILE, value: {{ include "chatterbox-tts.keyFile" . }}}
  - {name: CHATTERBOX_OPEN_METRICS, value: {{ $p.settings.openMetrics | quote }}}
  - {name: CHATTERBOX_QUEUE_SIZE, value: {{ $p.settings.queueSize | quote }}}
  - {name: CHATTERBOX_MAX_BATCH_SIZE, value: {{ $p.settings.maxBatchSize | quote }}}
  - {name: CHATTERBOX_MAX_TEXT_CHARS, value: {{ $p.settings.maxTextChars | quote }}}
  - {name: CHATTERBOX_TOKEN_CAP, value: {{ $p.settings.tokenCap | quote }}}
  - {name: CHATTERBOX_WATERMARK, value: {{ $p.settings.watermark | quote }}}
  - {name: CHATTERBOX_CLONE_MAX_UPLOAD_MB, value: {{ $p.settings.cloneMaxUploadMb | quote }}}
  - {name: CHATTERBOX_CLONE_MAX_TUNE_STEPS, value: {{ $p.settings.cloneMaxTuneSteps | quote }}}
  {{- if and (eq $p.mode "InferenceService") $p.storageUri }}
  # KServe reads a custom container's storage URI from this variable: its storage initializer fetches
  # the weights into /mnt/models before the container starts, and the predictor serves them from there.
  - {name: STORAGE_URI, value: {{ $p.storageUri | quote }}}
  {{- end }}
  {{- if $hf }}
  # For the predictor's own Hub download (storageUri empty); the storage initializer gets the token
  # through the ServiceAccount instead.
  - name: HF_TOKEN
    valueFrom: {secretKeyRef: {name: {{ $hf }}, key: {{ .Values.huggingface.secretKey }}}}
  {{- end }}
  {{- with $p.extraEnv }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
ports:
  # KServe's model server listens on 8080 (its --http_port default).
  - {name: http, containerPort: 8080, protocol: TCP}
# Loading the weights and the warm-up take minutes on a cold node: liveness waits for the startup probe.
startupProbe:
  httpGet: {path: /v2/health/live, port: 8080}
  periodSeconds: {{ $p.startupProbe.periodSeconds }}
  failureThreshold: {{ $p.startupProbe.failureThreshold }}
readinessProbe:
  httpGet: {path: /v2/health/ready, port: 8080}
  periodSeconds: {{ $p.readinessProbe.periodSeconds }}
  failureThreshold: {{ $p.readinessProbe.failureThreshold }}
livenessProbe:
  httpGet: {path: /v2/health/live, port: 8080}
  periodSeconds: {{ $p.livenessProbe.periodSeconds }}
  failureThreshold: {{ $p.livenessProbe.failureThreshold }}
  timeoutSeconds: 5
{{- $resources := deepCopy ($p.resources | default dict) }}
{{- if gt (int $p.gpu) 0 }}
{{- $_ := set $resources "limits" (merge (dict "nvidia.com/gpu" (int $p.gpu)) ($resources.limits | default dict)) }}
{{- end }}
{{- with $resources }}
resources:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  capabilities: {drop: [ALL]}
volumeMounts:
  - {name: voices, mountPath: /voices}
  - {name: api-key, mountPath: {{ include "chatterbox-tts.keyDir" . }}, readOnly: true}
  - {name: cache, mountPath: /var/cache/chatterbox}
  - {name: tmp, mountPath: /tmp}
  {{- if and (eq $p.mode "Deployment") $p.checkpointClaim }}
  # The path the predictor looks in for a complete checkpoint (where KServe would put it).
  - {name: checkpoint, mountPath: /mnt/models, readOnly: true}
  {{- end }}
{{- end -}}

{{/* chatterbox-tts.predictor.volumes: the predictor pod's volumes, in both modes. */}}
{{- define "chatterbox-tts.predictor.volumes" -}}
- name: voices
  persistentVolumeClaim: {claimName: {{ include "chatterbox-tts.voices.claimName" . }}}
- name: api-key
  secret:
    secretName: {{ include "chatterbox-tts.apiKey.secretName" . }}
    items: [{key: {{ .Values.apiKey.secretKey }}, path: api-key}]
- name: cache
  emptyDir: {}
- name: tmp
  emptyDir: {}
{{- if and (eq .Values.predictor.mode "Deployment") .Values.predictor.checkpointClaim }}
- name: checkpoint
  persistentVolumeClaim: {claimName: {{ .Values.predictor.checkpointClaim }}, readOnly: true}
{{- end }}
{{- end -}}

{{/* chatterbox-tts.predictor.podSecurityContext: uid/gid 1000 is the image's appuser; fsGroup makes /voices readable. */}}
{{- define "chatterbox-tts.predictor.podSecurityContext" -}}
{runAsNonRoot: true, runAsUser: 1000, runAsGroup: 1000, fsGroup: 1000}
{{- end -}}
