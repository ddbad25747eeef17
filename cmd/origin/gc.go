package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/shoal-project/shoal/pkg/auth"
	"github.com/shoal-project/shoal/pkg/gc"
	"github.com/shoal-project/shoal/pkg/origin"
)

// runGC is `shoal-origin gc`: it asks a running origin, over its internal
// endpoint and with the cluster secret, to run one pass — retention, its
// own sweep, then every other origin's sweep — and prints the reports.
// Asking the origin, rather than opening the store and etcd from here,
// keeps one process per store: the sweep's lock is the one the origin's
// commits take.
func runGC(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("shoal-origin gc", flag.ContinueOnError)
	addr := fs.String("origin", "127.0.0.1:5000", "host:port (or URL) of a running origin of the cluster")
	secretFile := fs.String("cluster-secret-file", "", "the cluster secret file the origins share (required)")
	dry := fs.Bool("dry-run", false, "report what would be removed; remove nothing")
	local := fs.Bool("local", false, "sweep only that origin's store, without retention or the other origins")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	caFile := fs.String("tls-ca", "", "CA of the origin's HTTPS certificate (https)")
	certFile := fs.String("tls-cert", "", "client certificate for the internal endpoint, when the origins require one")
	keyFile := fs.String("tls-key", "", "key of --tls-cert")
	timeout := fs.Duration("timeout", time.Hour, "give up after this long")
	if err := fs.Parse(args); errors.Is(err, flag.ErrHelp) {
		return nil
	} else if err != nil {
		return err
	}
	if *secretFile == "" {
		return errors.New("--cluster-secret-file is required")
	}
	secret, err := auth.ReadSecretFile(*secretFile, 16)
	if err != nil {
		return err
	}
	client := &http.Client{}
	scheme := "http"
	if *caFile != "" {
		pem, err := os.ReadFile(*caFile)
		if err != nil {
			return err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return fmt.Errorf("%s: no certificates", *caFile)
		}
		tc := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
		if *certFile != "" {
			cert, err := tls.LoadX509KeyPair(*certFile, *keyFile)
			if err != nil {
				return err
			}
			tc.Certificates = []tls.Certificate{cert}
		}
		client.Transport = &http.Transport{TLSClientConfig: tc}
		scheme = "https"
	}
	base := *addr
	if !strings.Contains(base, "://") {
		base = scheme + "://" + base
	}
	body, _ := json.Marshal(gc.Options{DryRun: *dry, Retention: !*local, Peers: !*local})
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(base, "/")+origin.InternalGCPath, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+secret)
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	rep, err := origin.DecodeGCReport(resp)
	if rep == nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		if jerr := enc.Encode(rep); jerr != nil {
			return jerr
		}
	} else {
		printReport(out, rep)
	}
	if err == nil && len(allErrors(rep)) > 0 {
		err = fmt.Errorf("%d errors (see above)", len(allErrors(rep)))
	}
	return err
}

func allErrors(r *gc.Report) []string {
	errs := r.Errors
	for i := range r.Peers {
		errs = append(errs, allErrors(&r.Peers[i])...)
	}
	return errs
}

// printReport writes a pass's report for a human: what retention removed,
// a line per origin, the blobs removed.
func printReport(w io.Writer, r *gc.Report) {
	mode := "removed"
	if r.DryRun {
		mode = "would remove (dry run)"
	}
	fmt.Fprintf(w, "gc pass via %s at etcd revision %d, %s\n", r.Origin, r.Revision, r.Started.UTC().Format(time.RFC3339))
	if r.DryRun {
		fmt.Fprintln(w, "dry run: nothing was removed")
	}
	fmt.Fprintf(w, "retention: %d tags, %d manifests %s\n", len(r.TagsDeleted), len(r.ManifestsDeleted), mode)
	for _, t := range r.TagsDeleted {
		fmt.Fprintf(w, "  tag      %s\n", t)
	}
	for _, m := range r.ManifestsDeleted {
		fmt.Fprintf(w, "  manifest %s\n", m)
	}
	all := append([]gc.Report{*r}, r.Peers...)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "origin\tmanifests\tmarked\tscanned\tblobs\tbytes\tkept\ttemp files\ttook\terrors\t")
	var blobs, kept int
	var bytes int64
	for _, o := range all {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%s\t%d\t\n", o.Origin, o.Manifests, o.Marked, o.Scanned,
			o.BlobsDeleted, o.BytesDeleted, o.Kept, o.TempFiles, o.Duration.Round(time.Millisecond), len(o.Errors))
		blobs += o.BlobsDeleted
		bytes += o.BytesDeleted
		kept += o.Kept
	}
	fmt.Fprintf(tw, "total\t\t\t\t%d\t%d\t%d\t\t\t\t\n", blobs, bytes, kept)
	tw.Flush()
	for _, o := range all {
		for _, b := range o.Blobs {
			fmt.Fprintf(w, "%s %s %s %d %s\n", strings.TrimSuffix(mode, " (dry run)"), o.Origin, b.Digest, b.Size, b.Reason)
		}
		for _, e := range o.Errors {
			fmt.Fprintf(w, "error %s: %s\n", o.Origin, e)
		}
	}
}
