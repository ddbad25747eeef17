//go:build tools

// Package kubebuild pins the Kubernetes commands the live-cluster test runs.
// It is a module of its own so that k8s.io/kubernetes and its hundred
// dependencies stay out of Shoal's go.mod: `make k8s-bins` builds from here.
package kubebuild

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
