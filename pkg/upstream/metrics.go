package upstream

import "github.com/prometheus/client_golang/prometheus"

// metrics are labelled by namespace only: never a URL or a user name.
type metrics struct {
	requests    *prometheus.CounterVec
	tags        *prometheus.CounterVec
	bytes       *prometheus.CounterVec
	blobsShared *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_upstream_requests_total",
			Help: "Requests to upstream registries, by namespace, object (manifest, blob) and result.",
		}, []string{"namespace", "object", "result"}),
		tags: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_upstream_tag_resolutions_total",
			Help: "Tag resolutions of pulled-through images: cached (within the TTL), resolved upstream, refreshed in the background before expiry, stale (upstream down, last digest served), error.",
		}, []string{"namespace", "result"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_upstream_blob_bytes_total",
			Help: "Blob bytes read from upstream registries.",
		}, []string{"namespace"}),
		blobsShared: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_upstream_blob_fetches_shared_total",
			Help: "Blob asks that waited on a fetch already under way in this origin instead of starting one.",
		}, []string{"namespace"}),
	}
	if reg != nil {
		reg.MustRegister(m.requests, m.tags, m.bytes, m.blobsShared)
	}
	return m
}
