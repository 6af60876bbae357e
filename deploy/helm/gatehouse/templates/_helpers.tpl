{{/* The release's name prefix of every object. */}}
{{- define "gatehouse.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels of every object; selector labels of one component. */}}
{{- define "gatehouse.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}
{{- define "gatehouse.selector" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* The image, by digest when one is given. */}}
{{- define "gatehouse.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ .Values.image.tag }}
{{- end -}}
{{- end -}}

{{/*
What the chart knows of each process of the image: its module, its environment prefix,
its serving and metrics ports (the native defaults, docs/architecture.md), the keys of
its Secret by variable, the backends it reaches and whether it has migrations.
*/}}
{{- define "gatehouse.processes" -}}
gateway:
  module: gatehouse_gateway
  prefix: GATEWAY
  portName: http
  port: 8000
  metricsPort: 9100
  secretEnv: {GATEWAY_REDIS_URL: redis-url}
  backends: [redis, keycloak]
authors:
  module: gatehouse_authors
  prefix: AUTHORS
  portName: grpc
  port: 7051
  metricsPort: 9101
  secretEnv: {AUTHORS_DATABASE_URL: database-url, AUTHORS_REDIS_URL: redis-url, AUTHORS_CURSOR_SECRET: cursor-secret}
  backends: [postgres, redis]
  migrations: true
audit:
  module: gatehouse_audit
  prefix: AUDIT
  portName: grpc
  port: 7052
  metricsPort: 9102
  secretEnv: {AUDIT_DATABASE_URL: database-url}
  backends: [postgres]
  migrations: true
ratelimit:
  module: gatehouse_ratelimit
  prefix: RATELIMIT
  portName: grpc
  port: 7053
  metricsPort: 9103
  secretEnv: {RATELIMIT_REDIS_URL: redis-url}
  backends: [redis]
{{- end -}}

{{/* The pod's and the container's security context: non-root, nothing writable but /tmp. */}}
{{- define "gatehouse.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile: {type: RuntimeDefault}
{{- end -}}
{{- define "gatehouse.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities: {drop: [ALL]}
{{- end -}}

{{/* Variables from the process's Secret: name, process. */}}
{{- define "gatehouse.secretEnv" -}}
{{- range $variable, $key := .process.secretEnv }}
- name: {{ $variable }}
  valueFrom:
    secretKeyRef: {name: {{ $.name }}, key: {{ $key }}}
{{- end }}
{{- end -}}

{{/*
Traefik's native dynamic configuration (deploy/traefik/dynamic/gatehouse.yml), the one
source of the public routers, the gRPC routing rule and the middlewares: its plain YAML
parts, with the template's lines dropped and its API rule filled in.
*/}}
{{- define "gatehouse.traefikNative" -}}
{{- $src := .Files.Get "files/traefik-dynamic.yml" -}}
{{- if not $src }}{{ fail "files/traefik-dynamic.yml is missing: the chart reads deploy/traefik/dynamic/gatehouse.yml through it" }}{{ end -}}
{{- $api := regexFind "\\$api := \"[^\"]*\"" $src | trimPrefix "$api := " | trimAll "\"" -}}
{{- $routers := regexFind "(?s)\n  routers:\n.*?\n\\{\\{- range" $src | trimSuffix "{{- range" | replace "{{ $api }}" $api -}}
{{- $routers = regexReplaceAll "(?m)^\\{\\{.*\\n" $routers "" -}}
{{- $middlewares := regexFind "(?s)\n  middlewares:\n.*?\n\n  services:" $src | trimSuffix "  services:" -}}
{{- $middlewares = regexReplaceAll "(?m)^\\{\\{.*\\n" $middlewares "" -}}
{{- $grpcRule := regexFind "rule: \"PathPrefix\\(`/gatehouse\\.\\{\\{ \\$name \\}\\}[^\"]*\"" $src | trimPrefix "rule: " | trimAll "\"" -}}
{{- $parsed := fromYaml (printf "%s%s" $routers $middlewares) -}}
{{- if or (not $parsed.routers) (not $parsed.middlewares) (not $grpcRule) }}{{ fail "deploy/traefik/dynamic/gatehouse.yml no longer has the routers, middlewares and gRPC rule the chart reads" }}{{ end -}}
{{- toYaml (dict "routers" $parsed.routers "middlewares" $parsed.middlewares "grpcRule" $grpcRule) -}}
{{- end -}}
