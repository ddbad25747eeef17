package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/images"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/remotes/docker"

	"github.com/shoal-project/shoal/pkg/digest"
	"github.com/shoal-project/shoal/pkg/reference"
	shoalpb "github.com/shoal-project/shoal/proto"
)

// ContainerdConfig is the node's containerd, for preheats that go all the
// way: the image pulled and unpacked there, so a pod scheduled on the node
// afterwards starts without a pull.
type ContainerdConfig struct {
	// Address is containerd's socket; empty: preheats stop at this
	// agent's cache.
	Address string `yaml:"address"`
	// Namespace is the containerd namespace images go to (default
	// "k8s.io", kubelet's).
	Namespace string `yaml:"namespace"`
	// Registry is the name containerd knows the registry by (the one its
	// hosts.toml points at this agent); default the preheat's registry.
	Registry string `yaml:"registry"`
	// Snapshotter unpacks the image (default containerd's).
	Snapshotter string `yaml:"snapshotter"`
	// Timeout bounds one pull (default 10m).
	Timeout time.Duration `yaml:"timeout"`
}

// pullIntoContainerd pulls an order's image into the node's containerd
// through this agent, whose cache holds every blob by now: containerd
// reads them from here, over loopback. The image is pulled by digest (a
// tag moved since the preheat began does not change what is pulled) and
// then named by its tag too, as kubelet looks it up.
func (a *Agent) pullIntoContainerd(ctx context.Context, o *shoalpb.PreheatOrder) error {
	cc := a.cfg.Containerd
	md, err := digest.Parse(o.GetManifestDigest())
	if err != nil {
		return fmt.Errorf("containerd pull: manifest digest: %w", err)
	}
	name := cc.Registry
	if name == "" {
		name = o.GetRegistry()
	}
	if name == "" {
		return errors.New("containerd pull: no registry name (set containerd.registry)")
	}
	if o.GetTag() != "" {
		if err := reference.ValidateTag(o.GetTag()); err != nil {
			return fmt.Errorf("containerd pull: %w", err)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, cc.Timeout)
	defer cancel()
	ctx = namespaces.WithNamespace(ctx, cc.Namespace)
	client, err := containerd.New(cc.Address, containerd.WithTimeout(10*time.Second))
	if err != nil {
		return fmt.Errorf("containerd pull: %w", err)
	}
	defer client.Close()
	self := a.listenAddr()
	ns := o.GetRegistry()
	resolver := docker.NewResolver(docker.ResolverOptions{Hosts: func(string) ([]docker.RegistryHost, error) {
		return []docker.RegistryHost{{
			Client: &http.Client{Transport: nsTransport{ns: ns}}, Host: self, Scheme: "http", Path: "/v2",
			Capabilities: docker.HostCapabilityPull | docker.HostCapabilityResolve,
		}}, nil
	}})
	opts := []containerd.RemoteOpt{containerd.WithPullUnpack, containerd.WithResolver(resolver)}
	if cc.Snapshotter != "" {
		opts = append(opts, containerd.WithPullSnapshotter(cc.Snapshotter))
	}
	ref := name + "/" + o.GetRepo() + "@" + md.String()
	start := time.Now()
	img, err := client.Pull(ctx, ref, opts...)
	if err != nil {
		return fmt.Errorf("containerd pull %s: %w", ref, err)
	}
	if o.GetTag() != "" {
		tagged := images.Image{Name: name + "/" + o.GetRepo() + ":" + o.GetTag(), Target: img.Target()}
		is := client.ImageService()
		_, err := is.Create(ctx, tagged)
		if errors.Is(err, errdefs.ErrAlreadyExists) {
			// The tag named an older image: it names this one now.
			_, err = is.Update(ctx, tagged)
		}
		if err != nil {
			return fmt.Errorf("containerd tag %s: %w", tagged.Name, err)
		}
		ref = tagged.Name
	}
	a.log.Info("preheat pulled into containerd", "image", ref, "digest", md, "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// nsTransport adds ?ns= to containerd's requests, so this agent serves
// them from the order's registry, as it would a mirror request.
type nsTransport struct{ ns string }

func (t nsTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if t.ns != "" && r.URL.Query().Get("ns") == "" {
		r = r.Clone(r.Context())
		q := r.URL.Query()
		q.Set("ns", t.ns)
		r.URL.RawQuery = q.Encode()
	}
	return http.DefaultTransport.RoundTrip(r)
}

// listenAddr is where this agent serves /v2, as containerd on this node
// reaches it.
func (a *Agent) listenAddr() string {
	a.mu.Lock()
	addr := a.served
	a.mu.Unlock()
	host, port, err := net.SplitHostPort(addr)
	if err == nil && (host == "" || net.ParseIP(host).IsUnspecified()) {
		return net.JoinHostPort("127.0.0.1", port)
	}
	return addr
}
