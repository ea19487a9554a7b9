{{/* vim: set filetype=mustache: */}}
{{/*
Expand the name of the chart.
*/}}
{{- define "pgbridge.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Fully qualified app name, truncated at 63 chars (DNS label). A release name that already contains
the chart name is used as is. Component suffixes (-producer, -sink, -metrics) fit because the base
is cut to 52.
*/}}
{{- define "pgbridge.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "pgbridge.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Selector labels shared by every pod of the release (the metrics Service selects both components).
*/}}
{{- define "pgbridge.selectorLabels" -}}
app.kubernetes.io/name: {{ include "pgbridge.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "pgbridge.labels" -}}
helm.sh/chart: {{ include "pgbridge.chart" . }}
{{ include "pgbridge.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: pgbridge
{{- end -}}

{{/*
Per-component labels. Call with (dict "ctx" $ "component" "producer").
*/}}
{{- define "pgbridge.componentSelectorLabels" -}}
{{ include "pgbridge.selectorLabels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "pgbridge.componentLabels" -}}
{{ include "pgbridge.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "pgbridge.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "pgbridge.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "pgbridge.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/*
The Secret the pods read credentials from: an existing one, or the chart-owned one.
*/}}
{{- define "pgbridge.secretName" -}}
{{- if .Values.existingSecret -}}
{{- .Values.existingSecret -}}
{{- else if .Values.secret.create -}}
{{- include "pgbridge.fullname" . -}}
{{- end -}}
{{- end -}}

{{/*
One env entry read from the Secret. Call with (dict "ctx" $ "env" "NAME" "key" "secret-key").
*/}}
{{- define "pgbridge.secretEnv" -}}
- name: {{ .env }}
  valueFrom:
    secretKeyRef:
      name: {{ include "pgbridge.secretName" .ctx }}
      key: {{ .key | quote }}
{{- end -}}

{{/*
Credentials for one component as env vars; secrets never reach the ConfigMap.
Call with (dict "ctx" $ "component" "producer"|"sink").
*/}}
{{- define "pgbridge.credentialEnv" -}}
{{- $ctx := .ctx -}}
{{- $keys := $ctx.Values.secretKeys -}}
{{- if include "pgbridge.secretName" $ctx }}
{{- with $keys.sourceDsn }}
{{ include "pgbridge.secretEnv" (dict "ctx" $ctx "env" "BRIDGE_SOURCE__DSN" "key" .) }}
{{- end }}
{{- with $keys.sinkDsn }}
{{ include "pgbridge.secretEnv" (dict "ctx" $ctx "env" "BRIDGE_SINK__DSN" "key" .) }}
{{- end }}
{{- if and (eq .component "producer") $keys.sourcePassword }}
{{ include "pgbridge.secretEnv" (dict "ctx" $ctx "env" "PGPASSWORD" "key" $keys.sourcePassword) }}
{{- end }}
{{- if and (eq .component "sink") $keys.sinkPassword }}
{{ include "pgbridge.secretEnv" (dict "ctx" $ctx "env" "PGPASSWORD" "key" $keys.sinkPassword) }}
{{- end }}
{{- with $keys.kafkaSaslPassword }}
{{ include "pgbridge.secretEnv" (dict "ctx" $ctx "env" $ctx.Values.kafkaSaslPasswordEnv "key" .) }}
{{- end }}
{{- end }}
{{- end -}}

{{/*
Label matchers that scope the alert rules to this release.
*/}}
{{- define "pgbridge.alertSelector" -}}
{{- if .Values.prometheusRule.selector -}}
{{- .Values.prometheusRule.selector -}}
{{- else -}}
{{- printf "namespace=%q,service=%q" .Release.Namespace (printf "%s-metrics" (include "pgbridge.fullname" .)) -}}
{{- end -}}
{{- end -}}

{{/*
The pod template of one component. Call with
(dict "ctx" $ "component" "producer"|"sink" "command" "produce"|"sink" "values" .Values.producer).
*/}}
{{- define "pgbridge.podTemplate" -}}
{{- $ctx := .ctx -}}
{{- $v := .values -}}
metadata:
  labels:
    {{- include "pgbridge.componentLabels" . | nindent 4 }}
    {{- with $v.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  annotations:
    checksum/config: {{ include (print $ctx.Template.BasePath "/configmap.yaml") $ctx | sha256sum }}
    {{- if $ctx.Values.secret.create }}
    checksum/secret: {{ include (print $ctx.Template.BasePath "/secret.yaml") $ctx | sha256sum }}
    {{- end }}
    {{- with $v.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  serviceAccountName: {{ include "pgbridge.serviceAccountName" $ctx }}
  automountServiceAccountToken: {{ $ctx.Values.automountServiceAccountToken }}
  {{- with $ctx.Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  terminationGracePeriodSeconds: {{ $v.terminationGracePeriodSeconds }}
  securityContext:
    {{- toYaml $ctx.Values.podSecurityContext | nindent 4 }}
  containers:
    - name: {{ .component }}
      image: {{ include "pgbridge.image" $ctx | quote }}
      imagePullPolicy: {{ $ctx.Values.image.pullPolicy }}
      args:
        - {{ .command }}
        - --config
        - /etc/pgbridge/bridge.yaml
        - --log-format
        - {{ $ctx.Values.logFormat }}
        - --log-level
        - {{ $ctx.Values.logLevel }}
      env:
        - name: PYTHONUNBUFFERED
          value: "1"
        {{- with (include "pgbridge.credentialEnv" . | trim) }}
        {{- . | nindent 8 }}
        {{- end }}
        {{- with $ctx.Values.extraEnv }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      ports:
        - name: metrics
          containerPort: {{ $ctx.Values.config.metrics.port }}
          protocol: TCP
      livenessProbe:
        httpGet:
          path: /healthz
          port: metrics
        {{- toYaml $ctx.Values.livenessProbe | nindent 8 }}
      readinessProbe:
        httpGet:
          path: /readyz
          port: metrics
        {{- toYaml $ctx.Values.readinessProbe | nindent 8 }}
      resources:
        {{- toYaml $v.resources | nindent 8 }}
      securityContext:
        {{- toYaml $ctx.Values.securityContext | nindent 8 }}
      volumeMounts:
        - name: config
          mountPath: /etc/pgbridge
          readOnly: true
        - name: tmp
          mountPath: /tmp
  volumes:
    - name: config
      configMap:
        name: {{ include "pgbridge.fullname" $ctx }}
    - name: tmp
      emptyDir:
        sizeLimit: 64Mi
  {{- with $v.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $v.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $v.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end -}}

{{/*
"true" when the ServiceMonitor (resp. PrometheusRule) is enabled AND the cluster serves its API
(the Prometheus Operator's CRDs are installed). Without the check an install on a cluster without
the operator fails ("no matches for kind ServiceMonitor"). `helm template` knows no cluster: pass
`--api-versions monitoring.coreos.com/v1/ServiceMonitor` (and .../PrometheusRule) to render them.
*/}}
{{- define "pgbridge.serviceMonitor.render" -}}
{{- if and .Values.serviceMonitor.enabled (.Capabilities.APIVersions.Has "monitoring.coreos.com/v1/ServiceMonitor") -}}
true
{{- end -}}
{{- end -}}

{{- define "pgbridge.prometheusRule.render" -}}
{{- if and .Values.prometheusRule.enabled (.Capabilities.APIVersions.Has "monitoring.coreos.com/v1/PrometheusRule") -}}
true
{{- end -}}
{{- end -}}
