package swarmsim

import "time"

type evKind uint8

const (
	evAgentStart   evKind = iota // h: the pull begins
	evDlBegin                    // dl: metainfo in hand, first announce
	evAnnounce                   // dl
	evTick                       // dl: expiries, stalls
	evSeedAnnounce               // h: announce complete blobs
	evStreamOpen                 // st, at the seeder: the dial's handshake arrives
	evDialResult                 // st, at the downloader: flag = it worked
	evRequest                    // st, piece, at the seeder
	evCancel                     // st, piece, at the seeder
	evBusy                       // st, piece, at the downloader; d = retry hint
	evPiece                      // st, piece, at the downloader
	evHave                       // st, piece, at the downloader
	evSeederClose                // st, at the seeder: the downloader closed it
	evSeederReset                // st, at the seeder: the downloader reset it
	evConnErr                    // st, at the downloader: the seeder is gone
	evSuperIdle                  // st, at the origin: super-seeding patience
	evHTTPStart                  // dl, piece, at the origin: a top-up's range read
	evHTTPPiece                  // dl, piece, at the downloader
	evHTTPBusy                   // dl, piece, at the downloader: 429; d = Retry-After
	evLeave                      // h: churn takes it down
	evReturn                     // h: back, with what it held
)

type event struct {
	at    time.Duration
	seq   uint64
	kind  evKind
	flag  bool
	piece int
	epoch int
	d     time.Duration
	h     *host
	dl    *download
	st    *stream
}

// eventHeap orders events by time, then by the order they were made, so
// a run is reproducible.
type eventHeap []event

func (h eventHeap) less(i, j int) bool {
	if h[i].at != h[j].at {
		return h[i].at < h[j].at
	}
	return h[i].seq < h[j].seq
}

func (h *eventHeap) push(e event) {
	*h = append(*h, e)
	s := *h
	j := len(s) - 1
	for j > 0 {
		i := (j - 1) / 2
		if !s.less(j, i) {
			break
		}
		s[i], s[j] = s[j], s[i]
		j = i
	}
}

func (h *eventHeap) pop() event {
	s := *h
	top := s[0]
	last := len(s) - 1
	s[0] = s[last]
	s[last] = event{}
	s = s[:last]
	*h = s
	i, n := 0, len(s)
	for {
		j := 2*i + 1
		if j >= n {
			break
		}
		if r := j + 1; r < n && s.less(r, j) {
			j = r
		}
		if !s.less(j, i) {
			break
		}
		s[i], s[j] = s[j], s[i]
		i = j
	}
	return top
}
