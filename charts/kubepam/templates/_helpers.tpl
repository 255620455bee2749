{{/*
The namespace kubepam runs in: fixed, because kubepam's guard protects it by
name and its RBAC, webhook Service and certificate name it.
*/}}
{{- define "kubepam.namespace" -}}
kubepam-system
{{- end }}

{{/* The chart label: name-version. */}}
{{- define "kubepam.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The labels that select kubepam's pods: the same as manifests/, so that a
Deployment installed with kustomize can be taken over (a selector cannot be
changed).
*/}}
{{- define "kubepam.selectorLabels" -}}
app.kubernetes.io/name: kubepam
{{- end }}

{{/* The labels of every object. */}}
{{- define "kubepam.labels" -}}
{{ include "kubepam.selectorLabels" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ include "kubepam.chart" . }}
{{- end }}

{{/* The container image. */}}
{{- define "kubepam.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/* Where a mounted webhook certificate (tls.crt, tls.key, ca.crt) is. */}}
{{- define "kubepam.webhookTLSDir" -}}
/etc/kubepam/webhook-tls
{{- end }}

{{/*
The Secret holding the webhook certificate, when kubepam reads it from files
(certificate source cert-manager or secret); empty when kubepam generates it.
*/}}
{{- define "kubepam.webhookTLSSecret" -}}
{{- $source := .Values.webhook.certificate.source }}
{{- if eq $source "cert-manager" }}kubepam-webhook-cert
{{- else if eq $source "secret" }}{{ .Values.webhook.certificate.secret.name }}
{{- end }}
{{- end }}

{{/* Whole seconds of a duration as kubepam reads it: 10s, 2m or 15. */}}
{{- define "kubepam.seconds" -}}
{{- if hasSuffix "m" . }}{{ mul (trimSuffix "m" . | atoi) 60 }}
{{- else }}{{ trimSuffix "s" . | atoi }}
{{- end }}
{{- end }}

{{/*
Checks of the values that no schema can express; each fails the render with
what to do.
*/}}
{{- define "kubepam.validate" -}}
{{- $namespace := include "kubepam.namespace" . }}
{{- if ne .Release.Namespace $namespace }}
{{- fail (printf "kubepam must be installed in the namespace %s, not %q: its guard protects that namespace by name. Install with --namespace %s --create-namespace" $namespace .Release.Namespace $namespace) }}
{{- end }}
{{- $certificate := .Values.webhook.certificate }}
{{- if not (has $certificate.source (list "generated" "cert-manager" "secret")) }}
{{- fail (printf "webhook.certificate.source must be generated, cert-manager or secret, not %q" $certificate.source) }}
{{- end }}
{{- if and (eq $certificate.source "secret") (not $certificate.secret.name) }}
{{- fail "webhook.certificate.source secret needs webhook.certificate.secret.name: a Secret in kubepam-system with tls.crt, tls.key and ca.crt" }}
{{- end }}
{{- with $certificate.certManager.issuerRef }}
{{- if not .name }}
{{- fail "webhook.certificate.certManager.issuerRef needs a name (and kind Issuer or ClusterIssuer), or leave it empty for the chart's own CA" }}
{{- end }}
{{- end }}
{{- $lease := include "kubepam.seconds" (.Values.leaderElection.leaseDuration | default "10s") | atoi }}
{{- $grace := include "kubepam.seconds" (.Values.leaderElection.renewGrace | default "3s") | atoi }}
{{- if ge $grace $lease }}
{{- fail (printf "leaderElection.renewGrace (%ds) must be shorter than leaderElection.leaseDuration (%ds)" $grace $lease) }}
{{- end }}
{{- end }}
