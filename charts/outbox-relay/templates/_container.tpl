{{/*
The relay container, as one item of a container list.

  outbox-relay.sidecarContainer  for other charts: the relay as a sidecar of their pods.
      Argument: the outbox-relay chart's context, i.e. `index .Subcharts "outbox-relay"` in a
      parent chart that depends on this one (so .Values are the relay's values).
      With sidecar.native true, the item carries `restartPolicy: Always` and belongs in the pod's
      initContainers (a Kubernetes native sidecar); with false it belongs in containers.
      Settings are inline env values (no ConfigMap needed in the parent), so a config change
      changes the pod template and rolls the pods. With secretFiles, the parent's pod must also
      list `include "outbox-relay.sidecarVolumes"` (same argument) in its volumes.

  outbox-relay.container  internal: dict "ctx" <context> "sidecar" <bool>.
*/}}

{{- define "outbox-relay.sidecarContainer" -}}
{{- include "outbox-relay.container" (dict "ctx" . "sidecar" true) }}
{{- end }}

{{/* Where the sidecar goes: "initContainers" (native) or "containers". */}}
{{- define "outbox-relay.sidecarPlacement" -}}
{{- ternary "initContainers" "containers" .Values.sidecar.native }}
{{- end }}

{{- define "outbox-relay.container" -}}
{{- $ctx := .ctx -}}
{{- $v := $ctx.Values -}}
{{- include "outbox-relay.validate" $ctx }}
{{- $native := and .sidecar $v.sidecar.native -}}
{{- if and $native (semverCompare "<1.29.0-0" $ctx.Capabilities.KubeVersion.Version) }}
{{- fail (printf "outbox-relay: sidecar.native needs Kubernetes >= 1.29 (native sidecars), this cluster is %s; set sidecar.native=false" $ctx.Capabilities.KubeVersion.Version) }}
{{- end }}
{{- $portName := ternary $v.sidecar.portName "http" .sidecar -}}
- name: {{ ternary $v.sidecar.containerName "outbox-relay" .sidecar }}
  image: {{ include "outbox-relay.image" $ctx | quote }}
  imagePullPolicy: {{ $v.image.pullPolicy }}
  {{- if $native }}
  # Native sidecar: started before the app containers, stopped (SIGTERM) after they exited.
  restartPolicy: Always
  {{- end }}
  args: ["run"]
  ports:
    - name: {{ $portName }}
      containerPort: {{ $v.http.port }}
      protocol: TCP
  {{- if .sidecar }}
  env:
    {{- include "outbox-relay.inlineEnv" $ctx | trim | nindent 4 }}
  {{- else }}
  envFrom:
    - configMapRef:
        name: {{ include "outbox-relay.fullname" $ctx }}
  env:
    {{- include "outbox-relay.secretEnv" $ctx | nindent 4 }}
  {{- end }}
  {{- with $v.secretFiles }}
  volumeMounts:
    {{- include "outbox-relay.volumeMounts" $ctx | nindent 4 }}
  {{- end }}
  # No preStop hook: the relay handles SIGTERM itself (finishes its in-flight batch within
  # OUTBOX_SHUTDOWN_TIMEOUT_SECS, then exits 0) and serves no traffic that would need the
  # endpoint removal to propagate first; a preStop sleep would only eat into the grace period.
  livenessProbe:
    httpGet:
      path: /healthz
      port: {{ $portName }}
    {{- toYaml $v.livenessProbe | nindent 4 }}
  {{- if or (not .sidecar) $v.sidecar.readinessProbe }}
  readinessProbe:
    httpGet:
      path: /readyz
      port: {{ $portName }}
    {{- toYaml $v.readinessProbe | nindent 4 }}
  {{- end }}
  {{- with $v.resources }}
  resources:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    {{- toYaml $v.securityContext | nindent 4 }}
{{- end }}
