{{- define "shoal.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "shoal.labels" -}}
app.kubernetes.io/name: shoal
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
{{- end -}}

{{- define "shoal.selector" -}}
app.kubernetes.io/name: shoal
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Client URLs of the etcd the cluster state lives in. */}}
{{- define "shoal.etcdEndpoints" -}}
{{- if .Values.etcd.enabled -}}
{{- $n := int .Values.etcd.replicas -}}
{{- $scheme := ternary "https" "http" .Values.tls.enabled -}}
{{- range $i, $_ := until $n -}}
{{- if $i }},{{ end }}{{ $scheme }}://{{ $.Release.Name }}-etcd-{{ $i }}.{{ $.Release.Name }}-etcd.{{ $.Release.Namespace }}.svc:2379
{{- end -}}
{{- else -}}
{{- join "," .Values.etcd.externalEndpoints -}}
{{- end -}}
{{- end -}}

{{- define "shoal.metricsAnnotations" -}}
{{- if .root.Values.metrics.annotations }}
annotations:
  prometheus.io/scrape: "true"
  prometheus.io/port: {{ .port | quote }}
  prometheus.io/path: /metrics
{{- end }}
{{- end -}}

{{- /* A component's certificate, key and the cluster CA: the Secret
<release>-tls-<component>, mounted at /etc/shoal/tls. */ -}}
{{- define "shoal.tlsVolume" -}}
{{- if .root.Values.tls.enabled -}}
- name: tls
  secret:
    secretName: {{ .root.Release.Name }}-tls-{{ .component }}
{{- end }}
{{- end -}}

{{- define "shoal.tlsMount" -}}
{{- if .Values.tls.enabled -}}
- name: tls
  mountPath: /etc/shoal/tls
  readOnly: true
{{- end }}
{{- end -}}

{{- /* The files a component's config names, under shoal.tlsMount. */ -}}
{{- define "shoal.tlsFiles" -}}
{cert_file: /etc/shoal/tls/tls.crt, key_file: /etc/shoal/tls/tls.key, ca_file: /etc/shoal/tls/ca.crt}
{{- end -}}

{{- /* The libp2p private-network key, mounted at /etc/shoal/pnet. */ -}}
{{- define "shoal.pnetVolume" -}}
{{- if .Values.p2p.psk.enabled -}}
- name: pnet
  secret:
    secretName: {{ .Release.Name }}-pnet
    items: [{key: swarm.key, path: swarm.key}]
{{- end }}
{{- end -}}

{{- define "shoal.pnetMount" -}}
{{- if .Values.p2p.psk.enabled -}}
- name: pnet
  mountPath: /etc/shoal/pnet
  readOnly: true
{{- end }}
{{- end -}}

{{- /* A component's own origin user (tracker or agent): the password
Secret mounted as a file, for origins that refuse anonymous pulls. */ -}}
{{- define "shoal.originAuthVolume" -}}
{{- if .username -}}
- name: origin-auth
  secret:
    secretName: {{ required "originAuth.passwordSecret is required with originAuth.username" .passwordSecret }}
    items: [{key: password, path: password}]
{{- end }}
{{- end -}}

{{- define "shoal.originAuthMount" -}}
{{- if .username -}}
- name: origin-auth
  mountPath: /etc/shoal/origin-auth
  readOnly: true
{{- end }}
{{- end -}}

{{- /* The capability key: the private key for origins (component
"origin"), the public half for agents, mounted at /etc/shoal/capability. */ -}}
{{- define "shoal.capabilityVolume" -}}
{{- if .root.Values.capabilities.enabled -}}
{{- $file := ternary "capability.key" "capability.pub" (eq .component "origin") -}}
- name: capability
  secret:
    secretName: {{ .root.Release.Name }}-capability-{{ ternary "key" "public" (eq .component "origin") }}
    items: [{key: {{ $file }}, path: {{ $file }}}]
{{- end }}
{{- end -}}

{{- define "shoal.capabilityMount" -}}
{{- if .Values.capabilities.enabled -}}
- name: capability
  mountPath: /etc/shoal/capability
  readOnly: true
{{- end }}
{{- end -}}

{{/* Origins and trackers run as the image's non-root user (65532). */}}
{{- define "shoal.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
{{- end -}}

{{- define "shoal.containerSecurityContext" -}}
allowPrivilegeEscalation: false
capabilities: {drop: [ALL]}
{{- end -}}

{{/* The agent's containers: root (containerd's files, the hostPath cache), no escalation. */}}
{{- define "shoal.agentSecurityContext" -}}
runAsUser: 0
runAsGroup: 0
runAsNonRoot: false
allowPrivilegeEscalation: false
{{- end -}}
