package origin

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the origin's Prometheus series, registered on a registry the
// caller owns so tests and several origins in one process do not collide.
type metrics struct {
	requests        *prometheus.CounterVec
	requestDuration *prometheus.HistogramVec
	bytesIn         prometheus.Counter
	bytesOut        prometheus.Counter
	uploadDuration  prometheus.Histogram
	uploadsActive   prometheus.Gauge
	uploadsRefused  *prometheus.CounterVec
	verifyFailures  prometheus.Counter

	replications     *prometheus.CounterVec
	replicationQueue prometheus.Gauge
	repairBytes      prometheus.Counter
	proxied          *prometheus.CounterVec
	members          prometheus.Gauge
	seeded           prometheus.Counter
	readersRefused   prometheus.Counter
	busySent         prometheus.Counter
	capabilities     *prometheus.CounterVec
	pulledThrough    *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_origin_http_requests_total",
			Help: "Registry API requests by endpoint, method and status code.",
		}, []string{"endpoint", "method", "code"}),
		requestDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "shoal_origin_http_request_duration_seconds",
			Help:    "Registry API request latency by endpoint and method.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 10),
		}, []string{"endpoint", "method"}),
		bytesIn: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shoal_origin_bytes_received_total",
			Help: "Blob and manifest bytes received from clients.",
		}),
		bytesOut: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shoal_origin_bytes_sent_total",
			Help: "Blob and manifest bytes sent to clients (origin egress).",
		}),
		uploadDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "shoal_origin_upload_duration_seconds",
			Help:    "Time from the start of a blob upload to its commit.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 11),
		}),
		uploadsActive: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "shoal_origin_uploads_in_progress",
			Help: "Upload sessions open.",
		}),
		uploadsRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_origin_upload_sessions_refused_total",
			Help: "Upload sessions refused with 429 by the limit they would pass: total or client (one user, or one address without credentials).",
		}, []string{"limit"}),
		verifyFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shoal_origin_blob_verify_failures_total",
			Help: "Stored blobs found not to match their digest when read; each is removed.",
		}),
		replications: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_origin_replications_total",
			Help: "Blob copies to owning origins, by cause (push, queue, repair) and result (copied, present, error).",
		}, []string{"cause", "result"}),
		replicationQueue: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "shoal_origin_replication_queue",
			Help: "Blobs waiting to reach all their owners (asynchronous mode, or an owner that failed).",
		}),
		repairBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shoal_origin_repair_bytes_total",
			Help: "Bytes copied to new owners after membership changes.",
		}),
		seeded: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shoal_origin_seeded_bytes_total",
			Help: "Piece bytes sent to agents over the piece protocol (origin egress besides /v2).",
		}),
		readersRefused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shoal_origin_blob_readers_refused_total",
			Help: "/v2 blob reads answered 429 because the uplink already served all the readers it could.",
		}),
		busySent: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shoal_origin_busy_sent_total",
			Help: "Piece requests the origin's seeder refused because its uplink was full.",
		}),
		capabilities: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_origin_capabilities_total",
			Help: "Piece capabilities by result: issued, not_issued (refused to a node), stream_refused (a peer without a valid one asked the seeder).",
		}, []string{"result"}),
		members: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "shoal_origin_cluster_members",
			Help: "Origins on the ring as this origin sees it (itself included).",
		}),
		proxied: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_origin_proxied_reads_total",
			Help: "Reads of blobs not held here, served from another origin, by result.",
		}, []string{"result"}),
		pulledThrough: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_origin_pulled_through_total",
			Help: "Manifests and blobs this origin fetched from an upstream registry and stored, by namespace and object.",
		}, []string{"namespace", "object"}),
	}
	reg.MustRegister(m.pulledThrough)
	reg.MustRegister(m.requests, m.requestDuration, m.bytesIn, m.bytesOut, m.uploadDuration, m.uploadsActive, m.uploadsRefused, m.verifyFailures,
		m.replications, m.replicationQueue, m.repairBytes, m.proxied, m.members, m.seeded,
		m.readersRefused, m.busySent, m.capabilities)
	return m
}
