{{/*
Names, labels and the table of components. Each component is one service of the pipeline; what
differs between them (entry point, settings prefix, input stream, which stores it uses) is in
"cryptoflow.components" and nowhere else.
*/}}

{{- define "cryptoflow.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "cryptoflow.fullname" -}}
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

{{- define "cryptoflow.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Components by values key: settings prefix, console entry point, input stream, stores. */}}
{{- define "cryptoflow.components" -}}
extractor:
  name: extractor
  prefix: EXTRACTOR
  command: cryptoflow-extractor
  lake: false
  database: false
lakeWriter:
  name: lake-writer
  prefix: LAKE_WRITER
  command: cryptoflow-lake-writer
  stream: RAW
  lake: true
  database: false
transformer:
  name: transformer
  prefix: TRANSFORMER
  command: cryptoflow-transformer
  stream: LAKE
  lake: true
  database: false
warehouseLoader:
  name: warehouse-loader
  prefix: WAREHOUSE_LOADER
  command: cryptoflow-warehouse-loader
  stream: SILVER
  lake: true
  database: true
{{- end }}

{{/* Resource name of a component: (dict "root" $ "name" "lake-writer") */}}
{{- define "cryptoflow.componentName" -}}
{{- printf "%s-%s" (include "cryptoflow.fullname" .root | trunc 40 | trimSuffix "-") .name }}
{{- end }}

{{- define "cryptoflow.selectorLabels" -}}
app.kubernetes.io/name: {{ include "cryptoflow.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .name }}
{{- end }}

{{- define "cryptoflow.labels" -}}
helm.sh/chart: {{ include "cryptoflow.chart" .root }}
{{ include "cryptoflow.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: cryptoflow
{{- end }}

{{- define "cryptoflow.commonLabels" -}}
helm.sh/chart: {{ include "cryptoflow.chart" . }}
app.kubernetes.io/name: {{ include "cryptoflow.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: cryptoflow
{{- end }}

{{- define "cryptoflow.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "cryptoflow.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "cryptoflow.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
NATS identity of a container (docs/decisions/0036): (dict "root" $ "user" "lake-writer"). The user is
the service's name, its password that key of nats.auth.existingSecret; with nats.tls.caSecret the
CA file the server's certificate is verified with.
*/}}
{{- define "cryptoflow.natsAuthEnv" -}}
{{- if .root.Values.nats.auth.enabled }}
- name: NATS_USER
  value: {{ .user | quote }}
- name: NATS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .root.Values.nats.auth.existingSecret }}
      key: {{ .user }}
{{- end }}
{{- if .root.Values.nats.tls.caSecret }}
- name: NATS_TLS_CA
  value: /etc/cryptoflow/nats-ca/{{ .root.Values.nats.tls.caKey }}
{{- end }}
{{- end }}

{{- define "cryptoflow.natsTlsMount" -}}
{{- if .Values.nats.tls.caSecret }}
- name: nats-ca
  mountPath: /etc/cryptoflow/nats-ca
  readOnly: true
{{- end }}
{{- end }}

{{- define "cryptoflow.natsTlsVolume" -}}
{{- if .Values.nats.tls.caSecret }}
- name: nats-ca
  secret:
    secretName: {{ .Values.nats.tls.caSecret }}
    items:
      - key: {{ .Values.nats.tls.caKey }}
        path: {{ .Values.nats.tls.caKey }}
{{- end }}
{{- end }}
