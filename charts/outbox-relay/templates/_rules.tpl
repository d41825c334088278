{{/*
The alert groups of the PrometheusRule. With default values they equal deploy/prometheus/alerts.yaml
(tests/chart/test_observability.py compares them): change both together.
*/}}
{{- define "outbox-relay.ruleGroups" -}}
{{- $r := .Values.prometheusRule -}}
groups:
  - name: outbox-relay
    rules:
      {{- with $r.lagHigh }}
      {{- if .enabled }}
      - alert: OutboxRelayLagHigh
        expr: max by (namespace, job) (outbox_relay_lag_seconds) > {{ .thresholdSeconds }}
        for: {{ .for }}
        labels:
          severity: {{ .severity }}
        annotations:
          summary: Outbox events wait too long to be published
          description: >-
            The oldest deliverable outbox event of {{`{{ $labels.namespace }}/{{ $labels.job }}`}} is
            {{`{{ $value | humanizeDuration }}`}} old (threshold {{ .thresholdSeconds }}s). Check the brokers, the relays'
            logs and `outbox-relay status`.
      {{- end }}
      {{- end }}
      {{- with $r.noLeader }}
      {{- if .enabled }}
      - alert: OutboxRelayNoLeader
        expr: sum by (namespace, job) (outbox_relay_leader) == 0
        for: {{ .for }}
        labels:
          severity: {{ .severity }}
        annotations:
          summary: No outbox relay replica relays
          description: >-
            Relay replicas of {{`{{ $labels.namespace }}/{{ $labels.job }}`}} report metrics, but none
            owns lanes (in single mode: none holds the leader lock), so no event is being
            published. Check their database connectivity and logs, and `outbox-relay status`.
      {{- end }}
      {{- end }}
      {{- with $r.lanesUnowned }}
      {{- if .enabled }}
      - alert: OutboxRelayLanesUnowned
        expr: max by (namespace, job) (outbox_relay_lanes_unowned) > 0
        for: {{ .for }}
        labels:
          severity: {{ .severity }}
        annotations:
          summary: Some outbox lanes have no relay
          description: >-
            {{`{{ $value }}`}} of the 64 lanes of {{`{{ $labels.namespace }}/{{ $labels.job }}`}} have had no
            owner for {{ include "outbox-relay.humanDuration" .for }}: events of those lanes are not relayed (the other lanes' are).
            Check the replicas (pods, their logs and database connectivity); `outbox-relay status`
            shows the lane map.
      {{- end }}
      {{- end }}
      {{- with $r.absent }}
      {{- if .enabled }}
      - alert: OutboxRelayAbsent
        expr: absent(outbox_relay_leader)
        for: {{ .for }}
        labels:
          severity: {{ .severity }}
        annotations:
          summary: No outbox relay reports metrics
          description: >-
            No outbox_relay_leader series has been scraped for {{ include "outbox-relay.humanDuration" .for }}: every relay is gone,
            crash-looping (e.g. a configuration error, exit code 2) or no longer scraped.
      {{- end }}
      {{- end }}
      {{- with $r.deadLetters }}
      {{- if .enabled }}
      - alert: OutboxRelayDeadLettersGrowing
        expr: sum by (namespace, job) (increase(outbox_relay_dead_lettered_total[{{ .window }}])) > 0
        labels:
          severity: {{ .severity }}
        annotations:
          summary: Outbox events are being dead-lettered
          description: >-
            {{`{{ $value | humanize }}`}} events of {{`{{ $labels.namespace }}/{{ $labels.job }}`}} were
            dead-lettered in the last {{ .window }} (all sinks; the dashboard shows them by sink). Inspect them with `outbox-relay dead-letters list`
            and put them back with `outbox-relay dead-letters retry`.
      {{- end }}
      {{- end }}
      {{- with $r.notReady }}
      {{- if .enabled }}
      - alert: OutboxRelayNotReady
        expr: outbox_relay_ready == 0
        for: {{ .for }}
        labels:
          severity: {{ .severity }}
        annotations:
          summary: An outbox relay is not connected to PostgreSQL or a sink
          description: >-
            Relay {{`{{ $labels.namespace }}/{{ $labels.pod }}`}} has not been connected to PostgreSQL
            and every sink (or a broker blocks publishing) for {{ include "outbox-relay.humanDuration" .for }}; it keeps retrying with
            backoff (while only a sink is missing, only its events wait). Its /readyz names what is
            missing. See outbox_relay_reconnects_total and its logs.
      {{- end }}
      {{- end }}
      {{- with $r.publishErrors }}
      {{- if .enabled }}
      - alert: OutboxRelayPublishErrorsHigh
        expr: >-
          sum by (namespace, job) (rate(outbox_relay_publish_errors_total[5m]))
          / (sum by (namespace, job) (rate(outbox_relay_publish_errors_total[5m]))
          + (sum by (namespace, job) (rate(outbox_relay_delivered_total[5m]))
          or 0 * sum by (namespace, job) (rate(outbox_relay_publish_errors_total[5m]))))
          > {{ .ratio }}
        for: {{ .for }}
        labels:
          severity: {{ .severity }}
        annotations:
          summary: Many outbox publish attempts fail
          description: >-
            {{`{{ $value | humanizePercentage }}`}} of the publish attempts of
            {{`{{ $labels.namespace }}/{{ $labels.job }}`}} failed over 5m, all sinks together
            (threshold {{ mulf .ratio 100 }}%). Check the brokers (the dashboard shows errors by sink) and the
            relays' logs.
      {{- end }}
      {{- end }}
{{- end }}

{{/* "10m" -> "10 minutes", "2h" -> "2 hours"; anything else unchanged. */}}
{{- define "outbox-relay.humanDuration" -}}
{{- $units := dict "s" "seconds" "m" "minutes" "h" "hours" -}}
{{- $unit := trimAll "0123456789" . -}}
{{- if hasKey $units $unit -}}
{{- $n := trimSuffix $unit . -}}
{{ $n }} {{ ternary (get $units $unit | trimSuffix "s") (get $units $unit) (eq $n "1") }}
{{- else -}}
{{ . }}
{{- end -}}
{{- end }}
