package tracker

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	announces *prometheus.CounterVec
	forwards  *prometheus.CounterVec
	metainfo  *prometheus.CounterVec
	fetches   prometheus.Counter
	swarms    prometheus.Gauge
	peers     prometheus.Gauge
	refused   *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		announces: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_tracker_announces_total", Help: "Announces handled, by result.",
		}, []string{"result"}),
		forwards: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_tracker_forwards_total", Help: "Announce RPCs forwarded to the owning tracker, by result.",
		}, []string{"result"}),
		metainfo: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_tracker_metainfo_requests_total", Help: "GetMetaInfo calls, by result (hit, fetched, not_found, not_found_cached: answered by the negative cache, rate_limited: a miss refused by the origin fetch limits, error).",
		}, []string{"result"}),
		fetches: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shoal_tracker_origin_metainfo_fetches_total", Help: "Metainfo requests sent to origins (cache misses, after coalescing).",
		}),
		swarms: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "shoal_tracker_swarms", Help: "Swarms with at least one live peer.",
		}),
		peers: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "shoal_tracker_peers", Help: "Live peer entries over all swarms.",
		}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_tracker_announce_refusals_total",
			Help: "What the tracker refused of announces, by reason: bad_proof (RPCs), forged_forward (RPCs), foreign_addr (addresses not on the caller's IP, dropped), ip_rate and peer_rate (announces over the limits), ip_entries (entries over one IP's share of the table).",
		}, []string{"reason"}),
	}
	reg.MustRegister(m.announces, m.forwards, m.metainfo, m.fetches, m.swarms, m.peers, m.refused)
	return m
}
