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
{{- if and (eq (.kind | default "Issuer") "ClusterIssuer") (not $certificate.certManager.allowClusterIssuer) }}
{{- fail "webhook.certificate.certManager.issuerRef names a ClusterIssuer: anyone who may request a certificate from it in any namespace could get one the API server takes for kubepam's webhooks. Use an Issuer in kubepam-system whose CA signs nothing else (or leave issuerRef empty for the chart's own CA), or set webhook.certificate.certManager.allowClusterIssuer=true if only trusted parties can use that ClusterIssuer" }}
{{- end }}
{{- end }}
{{- range .Values.extraArgs }}
{{- $flag := regexReplaceAll "=.*$" . "" }}
{{- if has $flag (list "--no-webhooks" "--no-register-webhooks" "--webhook-url" "--webhook-service" "--tls-secret" "--tls-cert-file" "--tls-key-file" "--tls-ca-file") }}
{{- fail (printf "extraArgs may not set %s: the chart does not turn off, move or re-key kubepam's guard through extra arguments; use webhook.certificate for the certificate" $flag) }}
{{- end }}
{{- end }}
{{- range .Values.extraEnv }}
{{- if has .name (list "KUBEPAM_NO_WEBHOOKS" "KUBEPAM_NO_REGISTER_WEBHOOKS" "KUBEPAM_WEBHOOK_URL" "KUBEPAM_WEBHOOK_SERVICE" "KUBEPAM_TLS_SECRET" "KUBEPAM_TLS_CERT_FILE" "KUBEPAM_TLS_KEY_FILE" "KUBEPAM_TLS_CA_FILE") }}
{{- fail (printf "extraEnv may not set %s: the chart does not turn off, move or re-key kubepam's guard through extra settings; use webhook.certificate for the certificate" .name) }}
{{- end }}
{{- end }}
{{- $lease := include "kubepam.seconds" (.Values.leaderElection.leaseDuration | default "10s") | atoi }}
{{- $grace := include "kubepam.seconds" (.Values.leaderElection.renewGrace | default "3s") | atoi }}
{{- if ge $grace $lease }}
{{- fail (printf "leaderElection.renewGrace (%ds) must be shorter than leaderElection.leaseDuration (%ds)" $grace $lease) }}
{{- end }}
{{- end }}
