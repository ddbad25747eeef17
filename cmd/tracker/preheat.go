package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/shoal-project/shoal/pkg/tlsconfig"
	"github.com/shoal-project/shoal/pkg/tracker"
	shoalpb "github.com/shoal-project/shoal/proto"
)

// runPreheat is `shoal-tracker preheat`: ask a tracker for K copies of an
// image and follow the preheat until they are announced.
func runPreheat(args []string) error {
	fs := flag.NewFlagSet("shoal-tracker preheat", flag.ContinueOnError)
	addr := fs.String("tracker", "127.0.0.1:7000", "tracker gRPC host:port")
	repo := fs.String("repo", "", "repository")
	tag := fs.String("tag", "", "tag to preheat")
	dig := fs.String("digest", "", "manifest digest to preheat (instead of --tag)")
	copies := fs.Int("copies", 1, "complete copies wanted")
	registry := fs.String("registry", "", "registry name the agents pull the image under (their ?ns=; empty: their default)")
	pin := fs.Duration("pin", 0, "how long agents pin the blobs (0: the tracker's default)")
	timeout := fs.Duration("timeout", 30*time.Minute, "give up following after this long (the preheat goes on)")
	tokenFile := fs.String("token-file", "", "file holding the tracker's preheat token")
	ctrd := fs.Bool("containerd", false, "agents also pull the image into their node's containerd (those configured with one)")
	var sel []string
	fs.Func("selector", "agent label to match, zone=, rack= or node= (repeatable)", func(s string) error {
		sel = append(sel, s)
		return nil
	})
	var tf tlsconfig.Files
	fs.StringVar(&tf.CertFile, "tls-cert", "", "PEM client certificate for a tracker with TLS")
	fs.StringVar(&tf.KeyFile, "tls-key", "", "PEM key of --tls-cert")
	fs.StringVar(&tf.CAFile, "tls-ca", "", "CA of the tracker's certificate")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ref := *tag
	if (*tag == "") == (*dig == "") {
		return errors.New("preheat: give one of --tag and --digest")
	}
	if *dig != "" {
		ref = *dig
	}
	if *tokenFile == "" {
		return errors.New("preheat: --token-file is required")
	}
	tok, err := os.ReadFile(*tokenFile)
	if err != nil {
		return fmt.Errorf("preheat: %w", err)
	}
	labels := &shoalpb.Labels{}
	for _, s := range sel {
		k, v, ok := strings.Cut(s, "=")
		switch {
		case ok && k == "zone":
			labels.Zone = v
		case ok && k == "rack":
			labels.Rack = v
		case ok && k == "node":
			labels.Node = v
		default:
			return fmt.Errorf("preheat: --selector %q: want zone=, rack= or node=", s)
		}
	}
	creds := insecure.NewCredentials()
	if tf.Enabled() {
		tc, err := tf.Client()
		if err != nil {
			return fmt.Errorf("preheat: tls: %w", err)
		}
		creds = credentials.NewTLS(tc)
	}
	conn, err := grpc.NewClient(*addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		return fmt.Errorf("preheat: %w", err)
	}
	defer conn.Close()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	_, err = tracker.RunPreheat(ctx, shoalpb.NewTrackerClient(conn), strings.TrimSpace(string(tok)), &shoalpb.PreheatRequest{
		Repo: *repo, Reference: ref, Copies: int32(*copies), Selector: labels, Registry: *registry,
		PinSeconds: int32(pin.Seconds()), Containerd: *ctrd,
	}, os.Stdout, time.Second)
	return err
}
