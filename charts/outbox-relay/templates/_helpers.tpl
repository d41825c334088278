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
*/}}
{{- define "outbox-relay.configEnv" -}}
{{- $c := .Values.config -}}
OUTBOX_SINK: {{ $c.sink | quote }}
{{- if $c.kafkaBrokers }}
OUTBOX_KAFKA_BROKERS: {{ $c.kafkaBrokers | quote }}
{{- end }}
{{- if $c.kafkaTopicTemplate }}
OUTBOX_KAFKA_TOPIC_TEMPLATE: {{ $c.kafkaTopicTemplate | quote }}
{{- end }}
{{- if and (eq $c.sink "rabbitmq") $c.amqpExchange }}
OUTBOX_AMQP_EXCHANGE: {{ $c.amqpExchange | quote }}
{{- end }}
OUTBOX_HTTP_ADDR: {{ printf "0.0.0.0:%d" (int .Values.http.port) | quote }}
OUTBOX_LOG_FORMAT: {{ $c.logFormat | quote }}
{{- if $c.rustLog }}
RUST_LOG: {{ $c.rustLog | quote }}
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

{{/*
Checks that need more than one value, with messages naming the value to set. The schema
(values.schema.json) already checked each value on its own.
*/}}
{{- define "outbox-relay.validate" -}}
{{- $v := .Values -}}
{{- if not $v.existingSecret }}
{{- fail "outbox-relay: set existingSecret to the name of a Secret holding the database URL (key existingSecretKeys.databaseUrl) and, for rabbitmq, the AMQP URL (key existingSecretKeys.amqpUrl); credentials are never taken as plain values" }}
{{- end }}
{{- if and (eq $v.config.sink "kafka") (not $v.config.kafkaBrokers) }}
{{- fail "outbox-relay: config.sink is kafka, so set config.kafkaBrokers (OUTBOX_KAFKA_BROKERS), e.g. kafka-0:9092,kafka-1:9092" }}
{{- end }}
{{- if and (eq $v.config.sink "rabbitmq") (not $v.existingSecretKeys.amqpUrl) }}
{{- fail "outbox-relay: config.sink is rabbitmq, so set existingSecretKeys.amqpUrl to the key of existingSecret that holds OUTBOX_AMQP_URL" }}
{{- end }}
{{- range $v.extraEnv }}
{{- if and (has .name (list "OUTBOX_DATABASE_URL" "DATABASE_URL" "OUTBOX_AMQP_URL" "OUTBOX_KAFKA_PROPERTIES")) (hasKey . "value") }}
{{- fail (printf "outbox-relay: extraEnv %s has a plain value; credentials come only from existingSecret (or valueFrom.secretKeyRef)" .name) }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Environment variables read from existingSecret, plus extraEnv.
*/}}
{{- define "outbox-relay.secretEnv" -}}
{{- $v := .Values -}}
- name: OUTBOX_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ $v.existingSecret | quote }}
      key: {{ $v.existingSecretKeys.databaseUrl | quote }}
{{- if eq $v.config.sink "rabbitmq" }}
- name: OUTBOX_AMQP_URL
  valueFrom:
    secretKeyRef:
      name: {{ $v.existingSecret | quote }}
      key: {{ $v.existingSecretKeys.amqpUrl | quote }}
{{- end }}
{{- if and (eq $v.config.sink "kafka") $v.existingSecretKeys.kafkaProperties }}
- name: OUTBOX_KAFKA_PROPERTIES
  valueFrom:
    secretKeyRef:
      name: {{ $v.existingSecret | quote }}
      key: {{ $v.existingSecretKeys.kafkaProperties | quote }}
{{- end }}
{{- with $v.extraEnv }}
{{ toYaml . }}
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
