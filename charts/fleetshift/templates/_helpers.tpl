{{/* The chart's name, overridable. */}}
{{- define "fleetshift.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name: <release>-fleetshift, or just <release> if it contains the chart name. */}}
{{- define "fleetshift.fullname" -}}
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

{{- define "fleetshift.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "fleetshift.selectorLabels" -}}
app.kubernetes.io/name: {{ include "fleetshift.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "fleetshift.labels" -}}
helm.sh/chart: {{ include "fleetshift.chart" . }}
{{ include "fleetshift.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: fleetshift
{{- end }}

{{- define "fleetshift.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "fleetshift.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "fleetshift.peeringName" -}}
{{- default (include "fleetshift.fullname" .) .Values.peering.name }}
{{- end }}

{{/* True (non-empty) in namespaced mode: only the listed namespaces are watched. */}}
{{- define "fleetshift.namespaced" -}}
{{- if .Values.watch.namespaces }}true{{ end }}
{{- end }}

{{/*
What the operator does in a namespace it watches, and nothing more. Each rule names the
code that needs it; tests/chart/test_rbac.py holds the same list as its allow-list.
*/}}
{{- define "fleetshift.watchedNamespaceRules" -}}
# Endpoints: kopf lists and watches them, patches its finalizer and bookkeeping annotations
# (kopf, handlers.py); kube.get_endpoint reads one.
- apiGroups: [fleetshift.dev]
  resources: [endpoints]
  verbs: [get, list, watch, patch]
# The status subresource: kube.replace_status and kube.set_phase.
- apiGroups: [fleetshift.dev]
  resources: [endpoints/status]
  verbs: [patch]
# Children carry owner references with blockOwnerDeletion; clusters running the
# OwnerReferencesPermissionEnforcement admission plugin (OpenShift) require this.
- apiGroups: [fleetshift.dev]
  resources: [endpoints/finalizers]
  verbs: [update]
# Fleets: server-side apply (create or patch), scale (patch), list, delete; kopf watches
# them into an index (handlers.fleet_deployments) and wakes their Endpoint.
- apiGroups: [apps]
  resources: [deployments]
  verbs: [list, watch, create, patch, delete]
# Serving pods: listed and watched into an index (handlers.fleet_pods), and the Replicas
# router patches one label (kube.set_serving).
- apiGroups: [""]
  resources: [pods]
  verbs: [list, watch, patch]
# The stable Service and the per-fleet Services of the GatewayAPI router (watched into an
# index, handlers.fleet_services).
- apiGroups: [""]
  resources: [services]
  verbs: [list, watch, create, patch, delete]
# One HPA per autoscaled fleet (watched into an index, handlers.fleet_hpas).
- apiGroups: [autoscaling]
  resources: [horizontalpodautoscalers]
  verbs: [list, watch, create, patch, delete]
# The shadows ConfigMap production pods read (Replicas router; watched into an index,
# handlers.fleet_config_maps).
- apiGroups: [""]
  resources: [configmaps]
  verbs: [list, watch, create, patch]
# One PodDisruptionBudget per fleet (watched into an index, handlers.fleet_disruption_budgets).
- apiGroups: [policy]
  resources: [poddisruptionbudgets]
  verbs: [list, watch, create, patch, delete]
{{- if .Values.rbac.gatewayAPI }}
# The GatewayAPI router's HTTPRoute (server-side apply; garbage collection deletes it).
- apiGroups: [gateway.networking.k8s.io]
  resources: [httproutes]
  verbs: [create, patch]
{{- end }}
{{- if .Values.rbac.readSecrets }}
# Prometheus credentials an Endpoint names (reconcile.prometheus_for): get only, no list.
- apiGroups: [""]
  resources: [secrets]
  verbs: [get]
{{- end }}
# Events for every rollout transition (kopf.event, kopf.warn).
- apiGroups: [""]
  resources: [events]
  verbs: [create]
{{- end }}

{{- define "fleetshift.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
