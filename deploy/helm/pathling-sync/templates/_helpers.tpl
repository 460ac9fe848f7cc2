{{/* Chart name, overridable. */}}
{{- define "pathling-sync.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: the release name when it contains the chart name. */}}
{{- define "pathling-sync.fullname" -}}
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

{{/* Selector labels: stable across upgrades. */}}
{{- define "pathling-sync.selectorLabels" -}}
app.kubernetes.io/name: {{ include "pathling-sync.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels of every object. */}}
{{- define "pathling-sync.labels" -}}
{{ include "pathling-sync.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "pathling-sync.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "pathling-sync.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "pathling-sync.configMapName" -}}
{{- default (include "pathling-sync.fullname" .) .Values.existingConfigMap }}
{{- end }}

{{- define "pathling-sync.secretName" -}}
{{- default (include "pathling-sync.fullname" .) .Values.secret.existingSecret }}
{{- end }}

{{- define "pathling-sync.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* A NetworkPolicy "from"/"to" list of one peer: {namespaceSelector, podSelector}. */}}
{{- define "pathling-sync.peer" -}}
{{- toYaml (list (pick . "namespaceSelector" "podSelector")) }}
{{- end }}
