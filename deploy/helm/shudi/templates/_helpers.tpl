{{/* Chart name, truncated for label values. */}}
{{- define "shudi.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name: <release>-shudi unless the release name already contains it. */}}
{{- define "shudi.fullname" -}}
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

{{- define "shudi.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "shudi.selectorLabels" -}}
app.kubernetes.io/name: {{ include "shudi.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "shudi.labels" -}}
helm.sh/chart: {{ include "shudi.chart" . }}
{{ include "shudi.selectorLabels" . }}
app.kubernetes.io/version: {{ (default .Chart.AppVersion .Values.image.tag) | trunc 63 | quote }}
app.kubernetes.io/component: worker
app.kubernetes.io/part-of: shudi
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "shudi.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "shudi.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* repository:tag or repository@digest */}}
{{- define "shudi.imageRef" -}}
{{- if .digest }}
{{- printf "%s@%s" .repository .digest }}
{{- else }}
{{- printf "%s:%s" .repository .tag }}
{{- end }}
{{- end }}

{{/* shudi's own image: the tag defaults to the chart's appVersion. */}}
{{- define "shudi.image" -}}
{{- include "shudi.imageRef" (dict "repository" .Values.image.repository "digest" .Values.image.digest "tag" (default .Chart.AppVersion .Values.image.tag)) }}
{{- end }}

{{/* An env value as text: whole numbers without exponent (Helm reads YAML numbers as float64). */}}
{{- define "shudi.envValue" -}}
{{- $v := . }}
{{- if kindIs "float64" $v }}
{{- if eq $v (float64 (int64 $v)) }}{{ int64 $v }}{{ else }}{{ $v }}{{ end }}
{{- else }}
{{- $v }}
{{- end }}
{{- end }}

{{- define "shudi.configMapName" -}}
{{- printf "%s-config" (include "shudi.fullname" .) }}
{{- end }}

{{- define "shudi.ipHashSecretName" -}}
{{- default (printf "%s-ip-hash" (include "shudi.fullname" .)) .Values.ipHashKey.existingSecret }}
{{- end }}

{{- define "shudi.saslEnabled" -}}
{{- if hasPrefix "SASL" .Values.kafka.securityProtocol }}true{{ end }}
{{- end }}

{{- define "shudi.tlsEnabled" -}}
{{- if has .Values.kafka.securityProtocol (list "SSL" "SASL_SSL") }}true{{ end }}
{{- end }}

{{- define "shudi.caFile" -}}
/etc/shudi/kafka-ca/{{ .Values.kafka.tls.caSecret.key }}
{{- end }}

{{/* Where the mutual-TLS client Secret is mounted. */}}
{{- define "shudi.clientDir" -}}
/etc/shudi/kafka-client
{{- end }}

{{/* The one place where settings the chart manages meet the free-form `config` map. */}}
{{- define "shudi.env" -}}
SHUDI_BROKER: {{ .Values.kafka.bootstrapServers | quote }}
SHUDI_APP_ID: {{ .Values.app.id | quote }}
SHUDI_INPUT_TOPIC: {{ .Values.app.inputTopic | quote }}
SHUDI_PARTITIONS: {{ include "shudi.envValue" .Values.app.partitions | quote }}
SHUDI_LOG_LEVEL: {{ .Values.app.logLevel | quote }}
SHUDI_STORE: {{ .Values.app.store | quote }}
SHUDI_SECURITY_PROTOCOL: {{ .Values.kafka.securityProtocol | quote }}
{{- if include "shudi.saslEnabled" . }}
SHUDI_SASL_MECHANISM: {{ .Values.kafka.sasl.mechanism | quote }}
{{- if and .Values.kafka.sasl.username (not .Values.kafka.sasl.usernameKey) }}
SHUDI_SASL_USERNAME: {{ .Values.kafka.sasl.username | quote }}
{{- end }}
{{- end }}
{{- if .Values.kafka.tls.caSecret.name }}
SHUDI_SSL_CAFILE: {{ include "shudi.caFile" . | quote }}
{{- end }}
{{- with .Values.kafka.tls.clientSecret }}
{{- if .name }}
SHUDI_SSL_CERTFILE: {{ printf "%s/%s" (include "shudi.clientDir" $) .certKey | quote }}
SHUDI_SSL_KEYFILE: {{ printf "%s/%s" (include "shudi.clientDir" $) .keyKey | quote }}
{{- if .keyPasswordKey }}
SHUDI_SSL_KEY_PASSWORD_FILE: {{ printf "%s/%s" (include "shudi.clientDir" $) .keyPasswordKey | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- $dir := trimSuffix "/" .Values.geoip.mountPath }}
{{- $dbs := list }}
{{- range (.Values.geoip.extraFiles | default list) }}{{ $dbs = append $dbs (printf "%s/%s" $dir .) }}{{ end }}
{{- $dbs = append $dbs (printf "%s/%s" $dir .Values.geoip.file) }}
SHUDI_GEOIP_DB: {{ join "," $dbs | quote }}
SHUDI_GEOIP_RELOAD_INTERVAL_S: {{ include "shudi.envValue" .Values.geoip.reloadIntervalSeconds | quote }}
SHUDI_METRICS_HOST: "0.0.0.0"
SHUDI_METRICS_PORT: {{ include "shudi.envValue" .Values.metrics.port | quote }}
SHUDI_DATA_DIR: {{ .Values.dataDir.path | quote }}
{{- range $name, $value := .Values.config }}
{{ printf "SHUDI_%s" (upper $name) }}: {{ include "shudi.envValue" $value | quote }}
{{- end }}
{{- end }}

{{/* Cross-value checks that values.schema.json cannot express. */}}
{{- define "shudi.validate" -}}
{{- $v := .Values }}
{{- if and $v.autoscaling.enabled $v.keda.enabled }}
{{- fail "autoscaling.enabled and keda.enabled are mutually exclusive (KEDA creates its own HPA)" }}
{{- end }}
{{- if and $v.keda.enabled (gt (int $v.keda.maxReplicaCount) (int $v.app.partitions)) }}
{{- fail (printf "keda.maxReplicaCount (%v) must not exceed app.partitions (%v): extra workers would sit idle" $v.keda.maxReplicaCount $v.app.partitions) }}
{{- end }}
{{- if and $v.autoscaling.enabled (gt (int $v.autoscaling.maxReplicas) (int $v.app.partitions)) }}
{{- fail (printf "autoscaling.maxReplicas (%v) must not exceed app.partitions (%v)" $v.autoscaling.maxReplicas $v.app.partitions) }}
{{- end }}
{{- if include "shudi.saslEnabled" . }}
{{- if not $v.kafka.sasl.existingSecret }}
{{- fail (printf "kafka.securityProtocol=%s needs kafka.sasl.existingSecret (a Secret with the password)" $v.kafka.securityProtocol) }}
{{- end }}
{{- if not (or $v.kafka.sasl.username $v.kafka.sasl.usernameKey) }}
{{- fail "SASL needs kafka.sasl.username or kafka.sasl.usernameKey" }}
{{- end }}
{{- end }}
{{- if and $v.kafka.tls.caSecret.name (not (include "shudi.tlsEnabled" .)) }}
{{- fail "kafka.tls.caSecret is set but kafka.securityProtocol is neither SSL nor SASL_SSL" }}
{{- end }}
{{- if and $v.kafka.tls.clientSecret.name (not (include "shudi.tlsEnabled" .)) }}
{{- fail "kafka.tls.clientSecret (mutual TLS) is set but kafka.securityProtocol is neither SSL nor SASL_SSL" }}
{{- end }}
{{- $managed := list "broker" "app_id" "input_topic" "partitions" "log_level" "store" "security_protocol" "sasl_mechanism" "sasl_username" "sasl_password" "sasl_password_file" "ssl_cafile" "ssl_certfile" "ssl_keyfile" "ssl_key_password" "ssl_key_password_file" "ip_hash_key" "ip_hash_key_file" "geoip_db" "geoip_reload_interval_s" "metrics_host" "metrics_port" "data_dir" }}
{{- range $name, $_ := $v.config }}
{{- if has (lower $name) $managed }}
{{- fail (printf "config.%s is set by the chart from its own values (see values.yaml)" $name) }}
{{- end }}
{{- end }}
{{- $src := $v.geoip.source }}
{{- if and (eq $src "pvc") (not $v.geoip.pvc.existingClaim) }}
{{- fail "geoip.source=pvc needs geoip.pvc.existingClaim" }}
{{- end }}
{{- if and $v.geoip.extraFiles (ne $v.geoip.source "pvc") }}
{{- fail "geoip.extraFiles needs geoip.source=pvc (a Secret or ConfigMap projects one file)" }}
{{- end }}
{{- if and (eq $src "secret") (not $v.geoip.secret.name) }}
{{- fail "geoip.source=secret needs geoip.secret.name" }}
{{- end }}
{{- if and (eq $src "configMap") (not $v.geoip.configMap.name) }}
{{- fail "geoip.source=configMap needs geoip.configMap.name" }}
{{- end }}
{{- if eq $src "geoipupdate" }}
{{- if not $v.geoip.geoipupdate.existingSecret }}
{{- fail "geoip.source=geoipupdate needs geoip.geoipupdate.existingSecret (MaxMind account id and license key)" }}
{{- end }}
{{- $first := first (splitList " " (trim $v.geoip.geoipupdate.editionIds)) }}
{{- if ne (printf "%s.mmdb" $first) $v.geoip.file }}
{{- fail (printf "geoip.file (%s) must be the first edition's file, %s.mmdb" $v.geoip.file $first) }}
{{- end }}
{{- end }}
{{- end }}


{{/* Environment of the geoipupdate init container and sidecar (credentials from the Secret). */}}
{{- define "shudi.geoipupdateEnv" -}}
{{- $gu := .Values.geoip.geoipupdate -}}
- name: GEOIPUPDATE_ACCOUNT_ID
  valueFrom:
    secretKeyRef:
      name: {{ $gu.existingSecret }}
      key: {{ $gu.accountIdKey }}
- name: GEOIPUPDATE_LICENSE_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $gu.existingSecret }}
      key: {{ $gu.licenseKeyKey }}
- name: GEOIPUPDATE_EDITION_IDS
  value: {{ $gu.editionIds | quote }}
- name: GEOIPUPDATE_DB_DIR
  value: {{ .Values.geoip.mountPath | quote }}
{{- with $gu.host }}
- name: GEOIPUPDATE_HOST
  value: {{ . | quote }}
{{- end }}
{{- with $gu.proxy }}
- name: GEOIPUPDATE_PROXY
  value: {{ . | quote }}
{{- end }}
{{- end }}

{{/* An IntOrString value: numbers bare, percentages quoted. */}}
{{- define "shudi.intOrString" -}}
{{- if kindIs "string" . }}{{ . | quote }}{{ else }}{{ int64 . }}{{ end }}
{{- end }}

{{/* Env of the worker beyond its ConfigMap: secrets and extraEnv. */}}
{{- define "shudi.workerEnv" -}}
{{- if include "shudi.saslEnabled" . }}
{{- if .Values.kafka.sasl.usernameKey }}
- name: SHUDI_SASL_USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ .Values.kafka.sasl.existingSecret }}
      key: {{ .Values.kafka.sasl.usernameKey }}
{{- end }}
- name: SHUDI_SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .Values.kafka.sasl.existingSecret }}
      key: {{ .Values.kafka.sasl.passwordKey }}
{{- end }}
{{- if or .Values.ipHashKey.existingSecret .Values.ipHashKey.value }}
- name: SHUDI_IP_HASH_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "shudi.ipHashSecretName" . }}
      key: {{ .Values.ipHashKey.key }}
{{- end }}
{{- with .Values.extraEnv }}
{{- toYaml . | nindent 0 }}
{{- end }}
{{- end }}
