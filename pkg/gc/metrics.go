package gc

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	blobs       *prometheus.CounterVec
	bytes       *prometheus.CounterVec
	manifests   prometheus.Counter
	tags        prometheus.Counter
	kept        prometheus.Counter
	tempFiles   prometheus.Counter
	runs        *prometheus.CounterVec
	duration    prometheus.Histogram
	lastSuccess prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		blobs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_origin_gc_blobs_deleted_total",
			Help: "Blobs garbage collection deleted from this origin's store, by reason (unreferenced, not_owner).",
		}, []string{"reason"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_origin_gc_bytes_reclaimed_total",
			Help: "Bytes of the blobs garbage collection deleted, by reason.",
		}, []string{"reason"}),
		manifests: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shoal_origin_gc_manifests_deleted_total",
			Help: "Manifests retention removed from the index.",
		}),
		tags: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shoal_origin_gc_tags_deleted_total",
			Help: "Tags retention removed from the index.",
		}),
		kept: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shoal_origin_gc_kept_total",
			Help: "Victims a pass kept because a push used them again while it ran.",
		}),
		tempFiles: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shoal_origin_gc_temp_files_deleted_total",
			Help: "Orphaned upload temp files removed.",
		}),
		runs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_origin_gc_runs_total",
			Help: "Garbage collection passes, by result (ok, error).",
		}, []string{"result"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "shoal_origin_gc_duration_seconds",
			Help:    "Duration of garbage collection passes.",
			Buckets: prometheus.ExponentialBuckets(0.01, 4, 10),
		}),
		lastSuccess: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "shoal_origin_gc_last_success_timestamp_seconds",
			Help: "Unix time of the last pass that finished without error.",
		}),
	}
	reg.MustRegister(m.blobs, m.bytes, m.manifests, m.tags, m.kept, m.tempFiles, m.runs, m.duration, m.lastSuccess)
	return m
}
