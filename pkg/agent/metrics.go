package agent

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	requests   *prometheus.CounterVec
	served     prometheus.Counter
	fromPeers  prometheus.Counter
	fromOrigin prometheus.Counter
	uploaded   prometheus.Counter
	downloads  prometheus.Gauge
	cacheBytes prometheus.Gauge
	cached     prometheus.Gauge
	pieces     *prometheus.CounterVec
	ttfb       prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_agent_requests_total", Help: "Registry requests from containerd, by kind and status code.",
		}, []string{"kind", "code"}),
		served: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shoal_agent_served_bytes_total", Help: "Blob bytes sent to local clients.",
		}),
		fromPeers: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shoal_agent_peer_bytes_total", Help: "Piece bytes received from peers.",
		}),
		fromOrigin: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shoal_agent_origin_bytes_total", Help: "Blob bytes fetched from origins (fallback).",
		}),
		uploaded: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shoal_agent_uploaded_bytes_total", Help: "Piece bytes seeded to peers.",
		}),
		downloads: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "shoal_agent_downloads_in_progress", Help: "Blobs being downloaded.",
		}),
		cacheBytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "shoal_agent_cache_bytes", Help: "Bytes held in the blob cache.",
		}),
		cached: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "shoal_agent_seeding_blobs", Help: "Complete blobs in the cache, seeded and announced.",
		}),
		pieces: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_agent_pieces_total", Help: "Pieces received from peers, by hash check result (verified, failed).",
		}, []string{"result"}),
		ttfb: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "shoal_agent_blob_first_byte_seconds", Help: "Time from a blob request to its first body byte.",
			Buckets: prometheus.ExponentialBuckets(0.001, 3, 12),
		}),
	}
	reg.MustRegister(m.requests, m.served, m.fromPeers, m.fromOrigin, m.uploaded, m.downloads, m.cacheBytes,
		m.cached, m.pieces, m.ttfb)
	return m
}
