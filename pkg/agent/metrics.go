package agent

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoal-project/shoal/pkg/swarm"
)

type metrics struct {
	requests   *prometheus.CounterVec
	served     prometheus.Counter
	fromPeers  prometheus.Counter
	fromOrigin prometheus.Counter
	uploaded   prometheus.Counter
	downloads  prometheus.Gauge
	cacheBytes prometheus.Gauge
	cached     prometheus.Gauge
	// upstreamNamespaces is how many upstream registries the origins
	// advertise and this agent serves through them.
	upstreamNamespaces prometheus.Gauge
	// cacheCorrupt counts cached blobs found not to match their digest
	// and evicted: a disk that rots them shows here first.
	cacheCorrupt prometheus.Counter
	// cacheEvicted counts blobs evicted to make room.
	cacheEvicted prometheus.Counter
	pieces       *prometheus.CounterVec
	ttfb         prometheus.Histogram
	// The transfer control's events: what the load test reports to show
	// how a rollout behaved.
	duplicates     prometheus.Counter
	expired        prometheus.Counter
	busyReceived   prometheus.Counter
	busySent       prometheus.Counter
	stalls         prometheus.Counter
	originRequests *prometheus.CounterVec
	// pullChecks counts the answers to "may this client pull this":
	// hit (a remembered yes), allowed (the origin said yes), unauthorized,
	// denied, unknown (not in that repository), error (no origin answered).
	pullChecks *prometheus.CounterVec
	// capabilities counts this node's piece capabilities: fetched, none
	// (the origins issue none), error; and refused: peers this node's
	// seeder turned away for want of a valid one.
	capabilities *prometheus.CounterVec
	// preheatOrders counts preheat orders run, by result (done, failed).
	preheatOrders *prometheus.CounterVec
	// pinned counts blobs pinned by preheats (cached or on their way).
	pinned prometheus.Gauge
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
		upstreamNamespaces: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "shoal_agent_upstream_namespaces", Help: "Upstream registries (?ns=) the origins advertise as pulled through, served via them.",
		}),
		cacheEvicted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shoal_agent_cache_evictions_total", Help: "Cached blobs evicted to make room for others and for downloads in progress.",
		}),
		cacheCorrupt: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shoal_agent_cache_corrupt_total", Help: "Cached blobs found not to match their digest, evicted and fetched again.",
		}),
		pieces: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_agent_pieces_total", Help: "Pieces received from peers, by hash check result (verified, failed).",
		}, []string{"result"}),
		ttfb: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "shoal_agent_blob_first_byte_seconds", Help: "Time from a blob request to its first body byte.",
			Buckets: prometheus.ExponentialBuckets(0.001, 3, 12),
		}),
		duplicates: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shoal_agent_duplicate_bytes_total", Help: "Piece bytes received for pieces already held (end game, late copies).",
		}),
		expired: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shoal_agent_requests_expired_total", Help: "Piece requests withdrawn because the peer went quiet past its deadline.",
		}),
		busyReceived: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shoal_agent_busy_received_total", Help: "Piece requests refused by a peer whose uplink was full.",
		}),
		busySent: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shoal_agent_busy_sent_total", Help: "Piece requests this agent refused because its uplink was full.",
		}),
		stalls: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shoal_agent_stalls_total", Help: "Downloads whose swarm went quiet, so pieces came from the origin one at a time.",
		}),
		originRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_agent_origin_requests_total", Help: "Range reads of the origin's /v2 (fallback), by result (ok, busy, error).",
		}, []string{"result"}),
		pullChecks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_agent_pull_checks_total",
			Help: "Checks that a client may pull an object of a repository, by result (hit, allowed, unauthorized, denied, unknown, error).",
		}, []string{"result"}),
		capabilities: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_agent_capabilities_total",
			Help: "Piece capabilities by result: fetched, none (the origins issue none), error; refused: peers turned away without a valid one.",
		}, []string{"result"}),
		preheatOrders: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_agent_preheat_orders_total",
			Help: "Preheat orders run, by result: done (every blob cached, pinned and announced), failed.",
		}, []string{"result"}),
	}
	m.pinned = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "shoal_agent_pinned_blobs", Help: "Blobs pinned by preheats until their TTL: eviction spares them.",
	})
	reg.MustRegister(m.preheatOrders, m.pinned)
	reg.MustRegister(m.requests, m.served, m.fromPeers, m.fromOrigin, m.uploaded, m.downloads, m.cacheBytes,
		m.cached, m.cacheCorrupt, m.cacheEvicted, m.pieces, m.ttfb, m.duplicates, m.expired, m.busyReceived, m.busySent, m.stalls, m.originRequests,
		m.pullChecks, m.capabilities, m.upstreamNamespaces)
	return m
}

// count feeds the swarm's transfer-control events into the counters.
func (m *metrics) count(what swarm.Count, n int) {
	switch what {
	case swarm.CountDuplicateBytes:
		m.duplicates.Add(float64(n))
	case swarm.CountExpired:
		m.expired.Add(float64(n))
	case swarm.CountBusy:
		m.busyReceived.Add(float64(n))
	case swarm.CountStall:
		m.stalls.Add(float64(n))
	case swarm.CountOriginOK:
		m.originRequests.WithLabelValues("ok").Add(float64(n))
	case swarm.CountOriginBusy:
		m.originRequests.WithLabelValues("busy").Add(float64(n))
	case swarm.CountOriginError:
		m.originRequests.WithLabelValues("error").Add(float64(n))
	}
}
