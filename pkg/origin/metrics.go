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
	verifyFailures  prometheus.Counter
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
		verifyFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shoal_origin_blob_verify_failures_total",
			Help: "Stored blobs found not to match their digest when read; each is removed.",
		}),
	}
	reg.MustRegister(m.requests, m.requestDuration, m.bytesIn, m.bytesOut, m.uploadDuration, m.uploadsActive, m.verifyFailures)
	return m
}
