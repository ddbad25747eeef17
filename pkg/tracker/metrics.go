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

	preheats        *prometheus.CounterVec
	preheatCopies   prometheus.Counter
	preheatAssigned prometheus.Counter
	preheatReplaced prometheus.Counter
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
		preheats: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_tracker_preheats_total", Help: "Preheats by event: started, done, noop (done with the copies already there), failed (timed out), refused (bad token).",
		}, []string{"event"}),
		preheatCopies: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shoal_tracker_preheat_copies_total", Help: "Complete image copies counted when preheats finished.",
		}),
		preheatAssigned: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shoal_tracker_preheat_assignments_total", Help: "Agents told to fetch an image for a preheat.",
		}),
		preheatReplaced: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shoal_tracker_preheat_replaced_total", Help: "Preheat agents given up on (stopped polling, or no complete copy within the assign timeout) and replaced.",
		}),
	}
	reg.MustRegister(m.preheats, m.preheatCopies, m.preheatAssigned, m.preheatReplaced)
	reg.MustRegister(m.announces, m.forwards, m.metainfo, m.fetches, m.swarms, m.peers, m.refused)
	return m
}
