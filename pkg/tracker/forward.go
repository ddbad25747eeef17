package tracker

import (
	"context"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/shoal-project/shoal/pkg/ring"
	shoalpb "github.com/shoal-project/shoal/proto"
)

// conn returns a cached client connection to a tracker. gRPC reconnects on
// its own, so one connection per address lives as long as the server.
func (s *Server) conn(addr string) (*grpc.ClientConn, error) {
	s.connMu.Lock()
	defer s.connMu.Unlock()
	if c, ok := s.conns[addr]; ok {
		return c, nil
	}
	creds := grpc.WithTransportCredentials(insecure.NewCredentials())
	if s.creds != nil {
		creds = grpc.WithTransportCredentials(s.creds)
	}
	c, err := grpc.NewClient(addr, creds)
	if err != nil {
		return nil, fmt.Errorf("dial tracker %s: %w", addr, err)
	}
	s.conns[addr] = c
	return c, nil
}

func (s *Server) closeConns() {
	s.connMu.Lock()
	defer s.connMu.Unlock()
	for addr, c := range s.conns {
		c.Close()
		delete(s.conns, addr)
	}
}

// forward sends one announce to its owner, marked so the owner answers it
// itself: one hop at most, even while rings disagree during a change.
func (s *Server) forward(ctx context.Context, owner ring.Member, req *shoalpb.AnnounceRequest) (*shoalpb.AnnounceResponse, error) {
	c, err := s.conn(owner.Addr)
	if err != nil {
		s.metrics.forwards.WithLabelValues("error").Inc()
		return nil, err
	}
	fwd := proto.CloneOf(req)
	fwd.Forwarded = true
	ctx, cancel := context.WithTimeout(ctx, s.cfg.ForwardTimeout)
	defer cancel()
	resp, err := shoalpb.NewTrackerClient(c).Announce(ctx, fwd)
	s.metrics.forwards.WithLabelValues(resultLabel(err)).Inc()
	return resp, err
}

func (s *Server) forwardBatch(ctx context.Context, owner ring.Member, req *shoalpb.AnnounceBatchRequest) ([]*shoalpb.AnnounceResponse, error) {
	c, err := s.conn(owner.Addr)
	if err != nil {
		s.metrics.forwards.WithLabelValues("error").Inc()
		return nil, err
	}
	fwd := &shoalpb.AnnounceBatchRequest{Announces: make([]*shoalpb.AnnounceRequest, len(req.GetAnnounces()))}
	for i, a := range req.GetAnnounces() {
		fwd.Announces[i] = proto.CloneOf(a)
		fwd.Announces[i].Forwarded = true
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.ForwardTimeout)
	defer cancel()
	resp, err := shoalpb.NewTrackerClient(c).AnnounceBatch(ctx, fwd)
	s.metrics.forwards.WithLabelValues(resultLabel(err)).Inc()
	if err != nil {
		return nil, err
	}
	if len(resp.GetResponses()) != len(fwd.Announces) {
		return nil, fmt.Errorf("tracker %s answered %d of %d announces", owner.ID, len(resp.GetResponses()), len(fwd.Announces))
	}
	return resp.GetResponses(), nil
}
