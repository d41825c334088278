{{/*
Helpers. Every helper takes the chart's own context (.Values, .Chart, .Release, .Capabilities):
the root context here, or `index .Subcharts "outbox-relay"` in a parent chart.
*/}}

{{- define "outbox-relay.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "outbox-relay.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "outbox-relay.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every resource, without a component. */}}
{{- define "outbox-relay.commonLabels" -}}
helm.sh/chart: {{ include "outbox-relay.chart" . }}
app.kubernetes.io/name: {{ include "outbox-relay.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Labels of the relay's own resources. */}}
{{- define "outbox-relay.labels" -}}
{{ include "outbox-relay.commonLabels" . }}
app.kubernetes.io/component: relay
{{- end }}

{{/* Selects the relay pods of mode deployment (not the migrate Job's pods). */}}
{{- define "outbox-relay.selectorLabels" -}}
app.kubernetes.io/name: {{ include "outbox-relay.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: relay
{{- end }}

{{- define "outbox-relay.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "outbox-relay.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "outbox-relay.image" -}}
{{- $v := .Values.image -}}
{{- if $v.digest -}}
{{ $v.repository }}@{{ $v.digest }}
{{- else -}}
{{ $v.repository }}:{{ default .Chart.AppVersion $v.tag }}
{{- end -}}
{{- end }}

{{/*
terminationGracePeriodSeconds: the drain time of `run` plus a margin, so the kubelet never kills
the relay in the middle of its drain.
*/}}
{{- define "outbox-relay.terminationGracePeriodSeconds" -}}
{{- add (int .Values.config.shutdownTimeoutSecs) (int .Values.terminationGraceMarginSeconds) }}
{{- end }}

{{/*
The non-secret settings as a flat map of environment variables (a dict rendered to YAML). One
source for the ConfigMap (mode deployment) and the inline env of a sidecar or the migrate Job.
Never a credential: those are in secretEnv (validate refuses them as plain values).
*/}}
{{- define "outbox-relay.configEnv" -}}
{{- $c := .Values.config -}}
{{- $ss := $c.sinkSettings | default dict -}}
{{- if $c.sink }}
OUTBOX_SINK: {{ $c.sink | quote }}
{{- end }}
{{- if and $c.kafkaBrokers (not (hasKey $ss "KAFKA_BROKERS")) }}
OUTBOX_KAFKA_BROKERS: {{ $c.kafkaBrokers | quote }}
{{- end }}
{{- if and $c.kafkaTopicTemplate (not (hasKey $ss "KAFKA_TOPIC_TEMPLATE")) }}
OUTBOX_KAFKA_TOPIC_TEMPLATE: {{ $c.kafkaTopicTemplate | quote }}
{{- end }}
{{- if and (eq $c.sink "rabbitmq") $c.amqpExchange (not (hasKey $ss "AMQP_EXCHANGE")) }}
OUTBOX_AMQP_EXCHANGE: {{ $c.amqpExchange | quote }}
{{- end }}
{{- range $setting, $value := $ss }}
{{ printf "OUTBOX_%s" $setting }}: {{ include "outbox-relay.settingValue" $value | quote }}
{{- end }}
{{- with .Values.sinks }}
{{- $named := list }}
{{- range $name, $sink := . }}
{{- $named = append $named (printf "%s=%s" $name $sink.kind) }}
{{- end }}
OUTBOX_SINKS: {{ join "," $named | quote }}
{{- range $name, $sink := . }}
{{- range $setting, $value := $sink.settings }}
{{ include "outbox-relay.sinkVar" (list $name $setting) }}: {{ include "outbox-relay.settingValue" $value | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- with $c.routes }}
OUTBOX_ROUTES: {{ join "," . | quote }}
{{- end }}
OUTBOX_HTTP_ADDR: {{ printf "0.0.0.0:%d" (int .Values.http.port) | quote }}
OUTBOX_LOG_FORMAT: {{ $c.logFormat | quote }}
{{- if $c.rustLog }}
RUST_LOG: {{ $c.rustLog | quote }}
{{- end }}
{{- if not (kindIs "invalid" $c.replicaMode) }}
OUTBOX_REPLICA_MODE: {{ $c.replicaMode | quote }}
{{- end }}
{{- if not (kindIs "invalid" $c.maxAttempts) }}
OUTBOX_MAX_ATTEMPTS: {{ $c.maxAttempts | int | toString | quote }}
{{- end }}
{{- if not (kindIs "invalid" $c.retryMaxDelayMs) }}
OUTBOX_RETRY_MAX_DELAY_MS: {{ $c.retryMaxDelayMs | int64 | toString | quote }}
{{- end }}
{{- if not (kindIs "invalid" $c.publishTimeoutMs) }}
OUTBOX_PUBLISH_TIMEOUT_MS: {{ $c.publishTimeoutMs | int64 | toString | quote }}
{{- end }}
{{- if not (kindIs "invalid" $c.batchMaxBytes) }}
OUTBOX_BATCH_MAX_BYTES: {{ $c.batchMaxBytes | int64 | toString | quote }}
{{- end }}
{{- if not (kindIs "invalid" $c.stallTimeoutSecs) }}
OUTBOX_STALL_TIMEOUT_SECS: {{ $c.stallTimeoutSecs | int64 | toString | quote }}
{{- end }}
OUTBOX_SHUTDOWN_TIMEOUT_SECS: {{ $c.shutdownTimeoutSecs | int | toString | quote }}
{{- end }}

{{/* A setting's value as text: numbers without a decimal point or exponent. */}}
{{- define "outbox-relay.settingValue" -}}
{{- if or (kindIs "float64" .) (kindIs "int64" .) (kindIs "int" .) -}}
{{- . | int64 | toString -}}
{{- else -}}
{{- . | toString -}}
{{- end -}}
{{- end }}

{{/* Environment variable of a named sink's setting: list <sink name> <setting>. */}}
{{- define "outbox-relay.sinkVar" -}}
{{- printf "OUTBOX_SINK_%s_%s" (index . 0 | upper | replace "-" "_") (index . 1) -}}
{{- end }}

{{/*
"true" when a setting (name without OUTBOX_ or the named sink's prefix) holds a credential: a URL
(AMQP_URL, REDIS_URL, NATS_URL, WEBHOOK_URL, DATABASE_URL, ...: they carry passwords and tokens),
a secret, password or token, or KAFKA_PROPERTIES (SASL passwords). Such a setting is never taken as
a plain value.
*/}}
{{- define "outbox-relay.isCredential" -}}
{{- if regexMatch "(^|_)(URL|SECRET|PASSWORD|TOKEN)$|^KAFKA_PROPERTIES$" . }}true{{ end }}
{{- end }}

{{/* Settings the chart sets from its own values: not sink settings. */}}
{{- define "outbox-relay.reservedSettings" -}}
{{- list "SINK" "SINKS" "ROUTES" "HTTP_ADDR" "LOG_FORMAT" "REPLICA_MODE" "MAX_ATTEMPTS" "RETRY_MAX_DELAY_MS" "PUBLISH_TIMEOUT_MS" "BATCH_MAX_BYTES" "STALL_TIMEOUT_SECS" "SHUTDOWN_TIMEOUT_SECS" "DATABASE_URL" | toJson }}
{{- end }}

{{/*
Checks that need more than one value, with messages naming the value to set. The schema
(values.schema.json) already checked each value on its own.
*/}}
{{- define "outbox-relay.validate" -}}
{{- $v := .Values -}}
{{- $c := $v.config -}}
{{- $kinds := list "stdout" "rabbitmq" "kafka" "redis" "nats" "http" "bullmq" -}}
{{- $ss := $c.sinkSettings | default dict -}}
{{- $sk := $v.existingSecretKeys.sinkSettings | default dict -}}
{{- $sinks := $v.sinks | default dict -}}
{{- $reserved := include "outbox-relay.reservedSettings" . | fromJsonArray -}}
{{- if not $v.existingSecret }}
{{- fail "outbox-relay: set existingSecret to the name of a Secret holding the database URL (key existingSecretKeys.databaseUrl) and, for rabbitmq, the AMQP URL (key existingSecretKeys.amqpUrl); credentials are never taken as plain values" }}
{{- end }}
{{- if and (not $c.sink) (not $sinks) }}
{{- fail (printf "outbox-relay: no sink: set config.sink (the default sink: %s) or name sinks in sinks (with routes in config.routes)" (join ", " $kinds)) }}
{{- end }}
{{- if and $c.sink (not (has $c.sink $kinds)) }}
{{- fail (printf "outbox-relay: config.sink %q is not a sink kind; expected one of %s" $c.sink (join ", " $kinds)) }}
{{- end }}
{{- if and (eq $c.sink "kafka") (not $c.kafkaBrokers) (not (hasKey $ss "KAFKA_BROKERS")) }}
{{- fail "outbox-relay: config.sink is kafka, so set config.kafkaBrokers (OUTBOX_KAFKA_BROKERS), e.g. kafka-0:9092,kafka-1:9092" }}
{{- end }}
{{- if and (eq $c.sink "rabbitmq") (not $v.existingSecretKeys.amqpUrl) (not (hasKey $sk "AMQP_URL")) }}
{{- fail "outbox-relay: config.sink is rabbitmq, so set existingSecretKeys.amqpUrl to the key of existingSecret that holds OUTBOX_AMQP_URL" }}
{{- end }}
{{- /* Settings of the default sink. */}}
{{- range $where, $m := dict "config.sinkSettings" $ss "existingSecretKeys.sinkSettings" $sk }}
{{- range $setting, $_ := $m }}
{{- if not (regexMatch "^[A-Z][A-Z0-9_]*$" $setting) }}
{{- fail (printf "outbox-relay: %s.%s: a setting name is upper-case letters, digits and '_' (the variable's name without OUTBOX_, e.g. REDIS_MAXLEN)" $where $setting) }}
{{- end }}
{{- if or (has $setting $reserved) (hasPrefix "SINK_" $setting) }}
{{- fail (printf "outbox-relay: %s.%s: OUTBOX_%s is not a sink setting; the chart sets it from its own values (config.*, sinks, config.routes, existingSecretKeys.databaseUrl)" $where $setting $setting) }}
{{- end }}
{{- end }}
{{- end }}
{{- if and (not $c.sink) (or $ss $sk) }}
{{- fail "outbox-relay: config.sinkSettings / existingSecretKeys.sinkSettings are settings of the default sink, but config.sink is empty; give named sinks their settings in sinks.<name>.settings / secretKeys" }}
{{- end }}
{{- range $setting, $_ := $ss }}
{{- if include "outbox-relay.isCredential" $setting }}
{{- fail (printf "outbox-relay: config.sinkSettings.%s is a credential and is never taken as a plain value; put it in existingSecret and set existingSecretKeys.sinkSettings.%s to its key" $setting $setting) }}
{{- end }}
{{- if hasKey $sk $setting }}
{{- fail (printf "outbox-relay: %s is in both config.sinkSettings and existingSecretKeys.sinkSettings; keep one" $setting) }}
{{- end }}
{{- end }}
{{- /* Named sinks. */}}
{{- $prefixes := dict }}
{{- range $name, $sink := $sinks }}
{{- if not (regexMatch "^[a-z0-9_-]+$" $name) }}
{{- fail (printf "outbox-relay: sinks.%s: a sink name must be lower-case letters, digits, '_' or '-'" $name) }}
{{- end }}
{{- if not (has $sink.kind $kinds) }}
{{- fail (printf "outbox-relay: sinks.%s.kind %q is not a sink kind; expected one of %s" $name (toString $sink.kind) (join ", " $kinds)) }}
{{- end }}
{{- if eq $name $c.sink }}
{{- fail (printf "outbox-relay: sinks.%s: the default sink (config.sink) is already named %s, after its kind; choose another name" $name $name) }}
{{- end }}
{{- $prefix := $name | upper | replace "-" "_" }}
{{- if hasKey $prefixes $prefix }}
{{- fail (printf "outbox-relay: sinks.%s and sinks.%s both have the variables OUTBOX_SINK_%s_*; rename one" (get $prefixes $prefix) $name $prefix) }}
{{- end }}
{{- $_ := set $prefixes $prefix $name }}
{{- range $where, $m := dict "settings" ($sink.settings | default dict) "secretKeys" ($sink.secretKeys | default dict) }}
{{- range $setting, $_ := $m }}
{{- if not (regexMatch "^[A-Z][A-Z0-9_]*$" $setting) }}
{{- fail (printf "outbox-relay: sinks.%s.%s.%s: a setting name is upper-case letters, digits and '_' (the variable's name without OUTBOX_SINK_<NAME>_, e.g. WEBHOOK_TIMEOUT_MS)" $name $where $setting) }}
{{- end }}
{{- end }}
{{- end }}
{{- range $setting, $_ := $sink.settings }}
{{- if include "outbox-relay.isCredential" $setting }}
{{- fail (printf "outbox-relay: sinks.%s.settings.%s is a credential and is never taken as a plain value; put it in existingSecret and set sinks.%s.secretKeys.%s to its key" $name $setting $name $setting) }}
{{- end }}
{{- if hasKey ($sink.secretKeys | default dict) $setting }}
{{- fail (printf "outbox-relay: %s is in both sinks.%s.settings and sinks.%s.secretKeys; keep one" $setting $name $name) }}
{{- end }}
{{- end }}
{{- $routed := false }}
{{- range $c.routes }}
{{- if eq (regexReplaceAll "^[^=]*=" . "" | trim) $name }}
{{- $routed = true }}
{{- end }}
{{- end }}
{{- if not $routed }}
{{- fail (printf "outbox-relay: sinks.%s has no route: add one to config.routes, e.g. \"audit.*=%s\"; only the default sink takes topics without a route" $name $name) }}
{{- end }}
{{- end }}
{{- /* Routes. */}}
{{- range $c.routes }}
{{- $target := regexReplaceAll "^[^=]*=" . "" | trim }}
{{- if not (or (eq $target $c.sink) (hasKey $sinks $target)) }}
{{- fail (printf "outbox-relay: config.routes: route %q names sink %q, which is neither the default sink (config.sink: %q) nor one of sinks (%s)" . $target $c.sink (keys $sinks | sortAlpha | join ", " | default "none")) }}
{{- end }}
{{- end }}
{{- /* extraEnv: no plain credentials. */}}
{{- range $v.extraEnv }}
{{- if and (or (eq .name "DATABASE_URL") (and (hasPrefix "OUTBOX_" .name) (include "outbox-relay.isCredential" (trimPrefix "OUTBOX_" .name)))) (hasKey . "value") }}
{{- fail (printf "outbox-relay: extraEnv %s has a plain value; credentials come only from existingSecret (or valueFrom.secretKeyRef)" .name) }}
{{- end }}
{{- end }}
{{- /* Secret files. */}}
{{- range $i, $f := $v.secretFiles }}
{{- if eq (len (compact (list ($f.key | default "") ($f.secretName | default "")))) 1 | not }}
{{- fail (printf "outbox-relay: secretFiles[%d] (mountPath %s): set exactly one of key (a key of existingSecret, mounted as one file) or secretName (a whole Secret, mounted as a directory)" $i $f.mountPath) }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Environment variables read from existingSecret, plus extraEnv.
*/}}
{{- define "outbox-relay.secretEnv" -}}
{{- $v := .Values -}}
{{- $sk := $v.existingSecretKeys.sinkSettings | default dict -}}
- name: OUTBOX_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ $v.existingSecret | quote }}
      key: {{ $v.existingSecretKeys.databaseUrl | quote }}
{{- if and (eq $v.config.sink "rabbitmq") (not (hasKey $sk "AMQP_URL")) }}
- name: OUTBOX_AMQP_URL
  valueFrom:
    secretKeyRef:
      name: {{ $v.existingSecret | quote }}
      key: {{ $v.existingSecretKeys.amqpUrl | quote }}
{{- end }}
{{- if and (eq $v.config.sink "kafka") $v.existingSecretKeys.kafkaProperties (not (hasKey $sk "KAFKA_PROPERTIES")) }}
- name: OUTBOX_KAFKA_PROPERTIES
  valueFrom:
    secretKeyRef:
      name: {{ $v.existingSecret | quote }}
      key: {{ $v.existingSecretKeys.kafkaProperties | quote }}
{{- end }}
{{- range $setting, $key := $sk }}
- name: {{ printf "OUTBOX_%s" $setting }}
  valueFrom:
    secretKeyRef:
      name: {{ $v.existingSecret | quote }}
      key: {{ $key | quote }}
{{- end }}
{{- range $name, $sink := $v.sinks }}
{{- range $setting, $key := $sink.secretKeys }}
- name: {{ include "outbox-relay.sinkVar" (list $name $setting) }}
  valueFrom:
    secretKeyRef:
      name: {{ $v.existingSecret | quote }}
      key: {{ $key | quote }}
{{- end }}
{{- end }}
{{- with $v.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Volumes of secretFiles, as items of a pod's volumes list (empty when there are none).
  outbox-relay.sidecarVolumes  for other charts: add to the volumes of the pod that carries the
      sidecar (argument: the relay chart's context, as for sidecarContainer).
*/}}
{{- define "outbox-relay.sidecarVolumes" -}}
{{- $v := .Values -}}
{{- range $i, $f := $v.secretFiles }}
- name: outbox-relay-secret-file-{{ $i }}
  secret:
    secretName: {{ default $v.existingSecret $f.secretName | quote }}
    {{- if $f.key }}
    items:
      - key: {{ $f.key | quote }}
        path: {{ base $f.mountPath | quote }}
    {{- end }}
{{- end }}
{{- end }}

{{/* volumeMounts of secretFiles, as items of the relay container's volumeMounts list. */}}
{{- define "outbox-relay.volumeMounts" -}}
{{- range $i, $f := .Values.secretFiles }}
- name: outbox-relay-secret-file-{{ $i }}
  mountPath: {{ $f.mountPath | quote }}
  readOnly: true
  {{- if $f.key }}
  subPath: {{ base $f.mountPath | quote }}
  {{- end }}
{{- end }}
{{- end }}

{{/*
The full env, inline (no ConfigMap): the sidecar, and the migrate Job (a pre-install hook runs
before the ConfigMap exists).
*/}}
{{- define "outbox-relay.inlineEnv" -}}
{{- range $name, $value := include "outbox-relay.configEnv" . | fromYaml }}
- name: {{ $name }}
  value: {{ $value | quote }}
{{- end }}
{{ include "outbox-relay.secretEnv" . }}
{{- end }}

{{/* Pod labels of the sidecar-example Deployment. */}}
{{- define "outbox-relay.exampleSelectorLabels" -}}
app.kubernetes.io/name: {{ include "outbox-relay.name" . }}-example
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}
