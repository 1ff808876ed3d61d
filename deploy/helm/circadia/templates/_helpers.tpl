{{/*
The three services, as the code defines them: the values key, the one port (the images EXPOSE it;
every service answers /healthz, /readyz and /metrics there), the settings that bind it, and the
secrets the service reads (ServiceSettings.SECRETS, plus redis_password for the gateways).
*/}}
{{- define "circadia.components" -}}
ingest-gateway:
  key: ingestGateway
  port: 8080
  portName: http
  hostEnv: CIRCADIA_INGEST_HOST
  portEnv: CIRCADIA_INGEST_PORT
  gateway: true
  secrets: [kafka_sasl_password, redis_password, sentry_dsn, user_keys_token]
prediction-worker:
  key: predictionWorker
  port: 9100
  portName: metrics
  hostEnv: CIRCADIA_WORKER_METRICS_HOST
  portEnv: CIRCADIA_WORKER_METRICS_PORT
  gateway: false
  secrets: [kafka_sasl_password, sentry_dsn, user_keys_token]
fanout-gateway:
  key: fanoutGateway
  port: 8081
  portName: http
  hostEnv: CIRCADIA_FANOUT_HOST
  portEnv: CIRCADIA_FANOUT_PORT
  gateway: true
  secrets: [kafka_sasl_password, redis_password, sentry_dsn, user_keys_token]
{{- end }}

{{/* the component's row of the table above; call with (dict "root" $ "component" "ingest-gateway") */}}
{{- define "circadia.spec" -}}
{{- index (include "circadia.components" .root | fromYaml) .component | toYaml }}
{{- end }}

{{- define "circadia.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else if contains .Chart.Name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/* <release>-circadia-<component>: the name of each of the component's objects */}}
{{- define "circadia.name" -}}
{{- printf "%s-%s" (include "circadia.fullname" .root) .component }}
{{- end }}

{{- define "circadia.selectorLabels" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* app.kubernetes.io/component is also the ServiceMonitors' jobLabel: the alerts' job names */}}
{{- define "circadia.labels" -}}
{{ include "circadia.selectorLabels" . }}
app.kubernetes.io/part-of: circadia
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- end }}

{{/*
The component's configuration as one map of environment variables: `config` (every service),
then `gatewayConfig` (the two gateways), then the service's own `config`, the later winning.
Variables the chart sets itself, and secrets, are refused: secrets come only from files.
*/}}
{{- define "circadia.config" -}}
{{- $spec := include "circadia.spec" . | fromYaml }}
{{- $values := index .root.Values $spec.key }}
{{- $merged := deepCopy (.root.Values.config | default dict) }}
{{- if $spec.gateway }}
{{- $merged = mergeOverwrite $merged (deepCopy (.root.Values.gatewayConfig | default dict)) }}
{{- end }}
{{- $merged = mergeOverwrite $merged (deepCopy ($values.config | default dict)) }}
{{- $managed := list "CIRCADIA_SECRETS_DIR" "CIRCADIA_KAFKA_SSL_CAFILE" "CIRCADIA_WORKER_DATA_DIR" "CIRCADIA_WORKER_INSTANCE_ID" $spec.hostEnv $spec.portEnv }}
{{- $secretNames := list "CIRCADIA_KAFKA_SASL_PASSWORD" "CIRCADIA_REDIS_PASSWORD" "CIRCADIA_SENTRY_DSN" "CIRCADIA_USER_KEYS_TOKEN" "CIRCADIA_VAULT_TOKEN" "CIRCADIA_VAULT_SECRET_ID" }}
{{- range $name, $_ := $merged }}
{{- if has $name $secretNames }}
{{- fail (printf "%s is a secret: values never hold secrets. Put %s in the Secret named by %s.secrets.existingSecret, or in Vault" $name (lower (trimPrefix "CIRCADIA_" $name)) $spec.key) }}
{{- end }}
{{- if has $name $managed }}
{{- fail (printf "%s is set by the chart (ports, mounts, instance ids); remove it from the %s configuration" $name $.component) }}
{{- end }}
{{- end }}
{{- toYaml $merged }}
{{- end }}

{{/* one configuration value as an env string: lists and maps as JSON (pydantic reads them so),
whole numbers without the exponent Helm's float64 values would print */}}
{{- define "circadia.envValue" -}}
{{- if or (kindIs "slice" .) (kindIs "map" .) }}{{ toJson . | quote }}
{{- else if and (kindIs "float64" .) (eq . (float64 (int64 .))) }}{{ int64 . | toString | quote }}
{{- else }}{{ toString . | quote }}
{{- end }}
{{- end }}

{{/* where the service reads its secret files: the Vault agent's volume or the mounted Secret */}}
{{- define "circadia.secretsDir" -}}
{{- if .root.Values.vault.agent.enabled }}/vault/secrets{{ else }}{{ .root.Values.secretsMountPath }}{{ end }}
{{- end }}

{{- define "circadia.env" -}}
{{- $spec := include "circadia.spec" . | fromYaml }}
{{- $config := include "circadia.config" . | fromYaml }}
- name: {{ $spec.hostEnv }}
  value: "0.0.0.0"
- name: {{ $spec.portEnv }}
  value: {{ $spec.port | quote }}
- name: CIRCADIA_SECRETS_DIR
  value: {{ include "circadia.secretsDir" . | quote }}
{{- if .root.Values.kafka.caSecret.name }}
- name: CIRCADIA_KAFKA_SSL_CAFILE
  value: {{ printf "/etc/circadia/kafka-ca/%s" .root.Values.kafka.caSecret.key | quote }}
{{- end }}
{{- if eq .component "prediction-worker" }}
- name: CIRCADIA_WORKER_DATA_DIR
  value: /var/lib/circadia/worker
{{- if .root.Values.predictionWorker.staticMembership }}
# static group membership: the StatefulSet pod's name is stable across restarts and unique
- name: CIRCADIA_WORKER_INSTANCE_ID
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
{{- end }}
{{- end }}
{{- range $name := keys $config | sortAlpha }}
- name: {{ $name }}
  value: {{ include "circadia.envValue" (index $config $name) }}
{{- end }}
{{- end }}

{{/* a setting from the configuration, else the service's own default (0 is a value, not unset) */}}
{{- define "circadia.setting" -}}
{{- $config := index . 0 }}{{ $name := index . 1 }}
{{- $value := ternary (index $config $name) (index . 2) (hasKey $config $name) }}
{{- include "circadia.envValue" $value | trimAll "\"" }}
{{- end }}

{{/*
Seconds from a pod's deletion to the end of a clean shutdown, as the code spends them
(docs/operations.md, "Rolling upgrades"):
  ingest gateway: an in-flight upload may wait for the parsers (CIRCADIA_INGEST_PARSE_WAIT_SECONDS)
    and then for the broker's acknowledgement (CIRCADIA_INGEST_PRODUCE_TIMEOUT_SECONDS)
  fan-out gateway: reconnect hints, then up to CIRCADIA_FANOUT_DRAIN_SECONDS for the send queues,
    then the WebSocket closing handshakes (closeSeconds: websockets' close_timeout, 10 s)
plus, for both, the preStop pause and a margin for leaving the consumer group and closing clients.
*/}}
{{- define "circadia.grace" -}}
{{- $config := include "circadia.config" . | fromYaml }}
{{- if eq .component "prediction-worker" }}
{{- .root.Values.predictionWorker.terminationGracePeriodSeconds | int }}
{{- else if eq .component "ingest-gateway" }}
{{- $s := .root.Values.ingestGateway.shutdown }}
{{- $wait := addf (include "circadia.setting" (list $config "CIRCADIA_INGEST_PARSE_WAIT_SECONDS" 10) | float64) (include "circadia.setting" (list $config "CIRCADIA_INGEST_PRODUCE_TIMEOUT_SECONDS" 10) | float64) }}
{{- add ($s.preStopSeconds | int) (ceil $wait | int) ($s.marginSeconds | int) }}
{{- else }}
{{- $s := .root.Values.fanoutGateway.shutdown }}
{{- $drain := include "circadia.setting" (list $config "CIRCADIA_FANOUT_DRAIN_SECONDS" 5) | float64 }}
{{- add ($s.preStopSeconds | int) (ceil $drain | int) ($s.closeSeconds | int) ($s.marginSeconds | int) }}
{{- end }}
{{- end }}

{{/* the fan-out's reconnect spread in whole seconds: a rollout waits this long between replicas */}}
{{- define "circadia.reconnectSpreadSeconds" -}}
{{- $config := include "circadia.config" (dict "root" .root "component" "fanout-gateway") | fromYaml }}
{{- $spread := include "circadia.setting" (list $config "CIRCADIA_FANOUT_RECONNECT_SPREAD_MS" 5000) | int }}
{{- div (add $spread 999) 1000 }}
{{- end }}

{{/* the worker's consumer group: faust's app id */}}
{{- define "circadia.workerGroup" -}}
{{- $config := include "circadia.config" (dict "root" .root "component" "prediction-worker") | fromYaml }}
{{- index $config "CIRCADIA_WORKER_APP_ID" | default "circadia-prediction-worker" }}
{{- end }}

{{/* more workers than partitions of health.samples.v1 would sit idle: refuse the render */}}
{{- define "circadia.workerMaxReplicas" -}}
{{- $w := .root.Values.predictionWorker }}
{{- $partitions := .root.Values.kafka.partitions | int }}
{{- $max := $partitions }}
{{- if $w.autoscaling.enabled }}
{{- $max = $w.autoscaling.maxReplicas | default $partitions | int }}
{{- if gt ($w.autoscaling.minReplicas | int) $max }}
{{- fail (printf "predictionWorker.autoscaling.minReplicas (%d) is above maxReplicas (%d)" ($w.autoscaling.minReplicas | int) $max) }}
{{- end }}
{{- else }}
{{- $max = $w.replicas | int }}
{{- end }}
{{- if gt $max $partitions }}
{{- fail (printf "%d prediction workers but health.samples.v1 has kafka.partitions=%d: a worker beyond the partition count gets no partition and sits idle; lower the worker's replicas (or maxReplicas) to at most %d" $max $partitions $partitions) }}
{{- end }}
{{- $max }}
{{- end }}

{{- define "circadia.resources" -}}
{{- $r := .resources | default dict }}
{{- range $kind := list "requests" "limits" }}
{{- $section := index $r $kind | default dict }}
{{- range $what := list "cpu" "memory" }}
{{- if not (index $section $what) }}
{{- fail (printf "%s.resources.%s.%s is required" $.key $kind $what) }}
{{- end }}
{{- end }}
{{- end }}
{{- toYaml $r }}
{{- end }}

{{/* Vault agent injector annotations: one file per secret the service reads, rendered from its KV v2
path, kept current by the agent sidecar (the services re-read their files every 30 s) */}}
{{- define "circadia.vaultAnnotations" -}}
{{- $spec := include "circadia.spec" . | fromYaml }}
{{- $values := index .root.Values $spec.key }}
{{- $agent := .root.Values.vault.agent }}
{{- $path := printf "%s/%s" (trimSuffix "/" $agent.kvPath) .component }}
vault.hashicorp.com/agent-inject: "true"
vault.hashicorp.com/role: {{ printf "%s%s" $agent.rolePrefix .component | quote }}
vault.hashicorp.com/agent-run-as-user: "10001"
vault.hashicorp.com/agent-run-as-group: "10001"
{{- range $name := $values.secrets.vault }}
{{- if not (has $name $spec.secrets) }}
{{- fail (printf "%s.secrets.vault: %s does not read a secret named %s (it reads %s)" $spec.key $.component $name (join ", " $spec.secrets)) }}
{{- end }}
vault.hashicorp.com/agent-inject-secret-{{ $name }}: {{ $path | quote }}
vault.hashicorp.com/agent-inject-template-{{ $name }}: {{ printf "{{- with secret %q -}}{{ .Data.data.%s }}{{- end -}}" $path $name | quote }}
vault.hashicorp.com/agent-inject-perms-{{ $name }}: "0400"
{{- end }}
{{- with $agent.annotations }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The pod template of a component; call with (dict "root" $ "component" "...") */}}
{{- define "circadia.pod" -}}
{{- $spec := include "circadia.spec" . | fromYaml }}
{{- $values := index .root.Values $spec.key }}
{{- $vault := .root.Values.vault.agent.enabled }}
{{- if and $vault $values.secrets.existingSecret }}
{{- fail (printf "%s: secrets.existingSecret and vault.agent.enabled both set; the service reads one secrets directory, choose one" $spec.key) }}
{{- end }}
metadata:
  labels:
    {{- include "circadia.labels" . | nindent 4 }}
  {{- if or $vault $values.podAnnotations }}
  annotations:
    {{- if $vault }}
    {{- include "circadia.vaultAnnotations" . | nindent 4 }}
    {{- end }}
    {{- with $values.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- end }}
spec:
  serviceAccountName: {{ include "circadia.name" . }}
  # the services never call the Kubernetes API; the Vault agent logs in with the token
  automountServiceAccountToken: {{ $vault }}
  terminationGracePeriodSeconds: {{ include "circadia.grace" . }}
  securityContext:
    runAsNonRoot: true
    runAsUser: 10001
    runAsGroup: 10001
    fsGroup: 10001
    seccompProfile:
      type: RuntimeDefault
  {{- with .root.Values.imagePullSecrets }}
  imagePullSecrets:
    {{- range . }}
    - name: {{ . }}
    {{- end }}
  {{- end }}
  topologySpreadConstraints:
    - maxSkew: 1
      topologyKey: kubernetes.io/hostname
      whenUnsatisfiable: ScheduleAnyway
      labelSelector:
        matchLabels:
          {{- include "circadia.selectorLabels" . | nindent 10 }}
  {{- with $values.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $values.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $values.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  containers:
    - name: {{ .component }}
      image: {{ printf "%s:%s" $values.image.repository ($values.image.tag | default .root.Chart.AppVersion) | quote }}
      imagePullPolicy: {{ $values.image.pullPolicy | default "IfNotPresent" }}
      ports:
        - name: {{ $spec.portName }}
          containerPort: {{ $spec.port }}
          protocol: TCP
      env:
        {{- include "circadia.env" . | trim | nindent 8 }}
      {{- if eq .component "prediction-worker" }}
      # The worker serves no requests: its metrics server (prometheus_client) answers every path,
      # so these probes say the process is up; its health is its lag (CircadiaWorkerConsumerLag).
      {{- end }}
      startupProbe:
        httpGet:
          path: /healthz
          port: {{ $spec.portName }}
        periodSeconds: 2
        failureThreshold: 60
      livenessProbe:
        httpGet:
          path: /healthz
          port: {{ $spec.portName }}
        periodSeconds: 10
        timeoutSeconds: 3
        failureThreshold: 3
      readinessProbe:
        httpGet:
          path: /readyz
          port: {{ $spec.portName }}
        periodSeconds: 5
        timeoutSeconds: 3
        failureThreshold: 2
      {{- if and $values.shutdown $values.shutdown.preStopSeconds }}
      lifecycle:
        # keep serving while the endpoint's removal reaches every proxy, then SIGTERM
        preStop:
          exec:
            command: ["sleep", {{ $values.shutdown.preStopSeconds | int | toString | quote }}]
      {{- end }}
      resources:
        {{- include "circadia.resources" (dict "resources" $values.resources "key" $spec.key) | nindent 8 }}
      securityContext:
        runAsNonRoot: true
        runAsUser: 10001
        runAsGroup: 10001
        readOnlyRootFilesystem: true
        allowPrivilegeEscalation: false
        privileged: false
        capabilities:
          drop: ["ALL"]
        seccompProfile:
          type: RuntimeDefault
      volumeMounts:
        - name: tmp
          mountPath: /tmp
        {{- if eq .component "prediction-worker" }}
        - name: data
          mountPath: /var/lib/circadia/worker
        {{- end }}
        {{- if and (not $vault) $values.secrets.existingSecret }}
        - name: secrets
          mountPath: {{ .root.Values.secretsMountPath }}
          readOnly: true
        {{- end }}
        {{- if .root.Values.kafka.caSecret.name }}
        - name: kafka-ca
          mountPath: /etc/circadia/kafka-ca
          readOnly: true
        {{- end }}
        {{- with $values.extraVolumeMounts }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
  volumes:
    - name: tmp
      emptyDir:
        sizeLimit: 64Mi
    {{- if eq .component "prediction-worker" }}
    - name: data
      emptyDir:
        sizeLimit: {{ $values.dataDir.sizeLimit | quote }}
    {{- end }}
    {{- if and (not $vault) $values.secrets.existingSecret }}
    # a directory, no subPath: a rotated value reaches the files, which the services re-read
    - name: secrets
      secret:
        secretName: {{ $values.secrets.existingSecret }}
        defaultMode: 0440
    {{- end }}
    {{- if .root.Values.kafka.caSecret.name }}
    - name: kafka-ca
      secret:
        secretName: {{ .root.Values.kafka.caSecret.name }}
        items:
          - key: {{ .root.Values.kafka.caSecret.key }}
            path: {{ .root.Values.kafka.caSecret.key }}
    {{- end }}
    {{- with $values.extraVolumes }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
{{- end }}
