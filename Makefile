# Shoal build, test and demo entry points. Everything CI does goes through here.
GO      ?= go
GOBIN   ?= $(shell $(GO) env GOPATH)/bin
BIN     := bin
export PATH := $(GOBIN):$(PATH)

# Pinned tool versions: .ci/run installs exactly these.
CRANE_VERSION              := v0.22.1
REGCTL_VERSION             := v0.11.7
STATICCHECK_VERSION        := v0.7.0
PROTOC_GEN_GO_VERSION      := v1.36.11
PROTOC_GEN_GO_GRPC_VERSION := v1.6.1
HELM_VERSION               := v3.22.0

COMMANDS := $(notdir $(wildcard cmd/*))

# Version: git describe of the last release tag (v<semver>, without the v);
# before the first tag, the chart's appVersion, so the default image tag and
# the chart's agree. COMMIT is the full hash, -dirty when the tree differs
# from it; SOURCE_DATE_EPOCH (the commit's time) dates everything in the image.
APP_VERSION       := $(shell sed -n 's/^appVersion: *"*\([^"]*\)"*$$/\1/p' deploy/helm/shoal/Chart.yaml)
GIT_DESCRIBE      := $(shell git describe --tags --match 'v[0-9]*' 2>/dev/null)
VERSION           ?= $(if $(GIT_DESCRIBE),$(patsubst v%,%,$(GIT_DESCRIBE)),$(APP_VERSION))
COMMIT            ?= $(shell git describe --always --abbrev=40 --dirty --match 'no-tag-matches^' 2>/dev/null || echo unknown)
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || echo 0)
VERSION_LDFLAGS   := -X github.com/shoal-project/shoal/pkg/version.Version=$(VERSION) \
	-X github.com/shoal-project/shoal/pkg/version.Commit=$(COMMIT)
# The chart's default image.repository: make image tags the layout with VERSION.
IMAGE_REPO        ?= ghcr.io/shoal-project/shoal
IMAGE_PLATFORMS   ?= linux/amd64,linux/arm64
IMAGE_LICENSES    ?= NOASSERTION

.PHONY: all build test test-short demo proto lint bench fuzz tools manifests clean k8s-bins image version test-k8s

all: build

## build: compile bin/shoal-<component> for every command under cmd/
build:
	@mkdir -p $(BIN)
	@for c in $(COMMANDS); do \
		[ -n "$$(ls cmd/$$c/*.go 2>/dev/null)" ] || continue; \
		echo "go build -o $(BIN)/shoal-$$c ./cmd/$$c"; \
		$(GO) build -trimpath -ldflags '$(VERSION_LDFLAGS)' -o $(BIN)/shoal-$$c ./cmd/$$c || exit 1; \
	done

## version: the version make build and make image stamp (and the image tag)
version:
	@echo $(VERSION)

## image: Shoal's OCI image index (linux/amd64 + linux/arm64, static binaries, non-root
## user 65532, OCI annotations) as an OCI layout in bin/image, built twice to check that
## the index digest repeats (REPRO_CHECK=0 skips that). PUSH=host/repo:tag pushes the
## layout's index (PUSH_FLAGS=--insecure for a plain-HTTP registry beyond localhost).
REPRO_CHECK ?= 1
IMAGE_BUILD_ONE = $(GO) run ./tools/image build --version $(VERSION) --commit $(COMMIT) \
	--epoch $(SOURCE_DATE_EPOCH) --licenses $(IMAGE_LICENSES)
IMAGE_BUILD = $(IMAGE_BUILD_ONE) --platforms $(IMAGE_PLATFORMS)
image:
	@mkdir -p $(BIN)
	$(IMAGE_BUILD) --out $(BIN)/image > $(BIN)/image.txt && cat $(BIN)/image.txt
	@if [ "$(REPRO_CHECK)" = 1 ]; then \
		$(IMAGE_BUILD) --out $(BIN)/image.check > $(BIN)/image.check.txt || exit 1; \
		a=$$(head -1 $(BIN)/image.txt); b=$$(head -1 $(BIN)/image.check.txt); rm -rf $(BIN)/image.check; \
		if [ "$$a" != "$$b" ]; then echo "NOT reproducible: $$a, then $$b"; exit 1; fi; \
		echo "reproducible: a second build gave the same $$b"; \
	fi
	@if [ -n "$(PUSH)" ]; then $(GO) run ./tools/image push --layout $(BIN)/image $(PUSH_FLAGS) $(PUSH); fi

## test: the whole suite, with the race detector (what CI runs)
test: build
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' | grep -v '\.pb\.go$$')); \
		if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...
	SHOAL_BIN=$(CURDIR)/$(BIN) $(GO) test -race -count=1 -timeout 12m ./...
	@if [ -x $(K8S_BIN)/kubelet ] && [ "$$(id -u)" = 0 ]; then $(MAKE) --no-print-directory test-k8s; \
	else echo "test-k8s skipped: no cluster binaries in $(K8S_BIN) (make k8s-bins; .ci/run does) or not root"; fi

## test-k8s: the Helm chart installed on a live single-node Kubernetes (root): Shoal's image
## from an origin outside the cluster, a pod's image pulled through the node's agent,
## dogfooding, rollout restart, origin pod loss, uninstall restoring containerd's files.
## Uses the host platform's image only (make image builds and checks both).
test-k8s: build k8s-bins
	$(IMAGE_BUILD_ONE) --platforms linux/$(shell $(GO) env GOARCH) --out $(BIN)/image-k8s
	cd e2e/k8s && SHOAL_K8S_REQUIRED=1 SHOAL_K8S_BIN=$(K8S_BIN) SHOAL_BIN=$(CURDIR)/$(BIN) SHOAL_IMAGE=$(CURDIR)/$(BIN)/image-k8s \
		$(GO) test -count=1 -v -timeout 25m -run TestHelmChartOnLiveCluster .

## test-short: unit tests only, no external clients
test-short:
	$(GO) test -short -count=1 ./...

## demo: a local fleet (tracker, seeding origin, 8 agents) pulls a generated image
## peer-to-peer, then straight from the origin, and prints the report
demo: build
	$(GO) run ./loadtest --agents 8 --image 128MiB --layers 4 --link 400Mbit --bin $(BIN)

## proto: regenerate Go from proto/*.proto (protoc from Debian protobuf-compiler)
proto:
	protoc -I proto --go_out=proto --go_opt=paths=source_relative \
		--go-grpc_out=proto --go-grpc_opt=paths=source_relative proto/*.proto

## lint: gofmt, go vet and staticcheck
lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go' | grep -v '\.pb\.go$$'))" || (gofmt -l . ; exit 1)
	$(GO) vet ./...
	staticcheck ./...

## bench: push/pull against a raw loopback copy in the same run; ring and tracker announce costs
bench: build
	$(GO) test -run '^$$' -bench . -benchtime 3x -timeout 20m ./pkg/origin/
	$(GO) test -run '^$$' -bench . -benchtime 2s -benchmem ./pkg/ring/ ./pkg/tracker/
	SHOAL_BIN=$(CURDIR)/$(BIN) $(GO) test -run '^$$' -bench . -benchtime 3s ./cmd/tracker/
	$(GO) test -run '^$$' -bench . -benchtime 4x ./pkg/p2p/
	$(GO) test -run '^$$' -bench Pull1GiB -benchtime 2x -timeout 20m ./pkg/agent/

## fuzz: run every fuzz target briefly (FUZZTIME=30s by default)
FUZZTIME ?= 30s
fuzz:
	@for spec in $$(grep -rl --include='*_test.go' '^func Fuzz' pkg | xargs -n1 dirname | sort -u); do \
		for f in $$(grep -h '^func Fuzz' $$spec/*_test.go | sed 's/func \(Fuzz[A-Za-z0-9_]*\).*/\1/'); do \
			echo "== $$spec $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) ./$$spec || exit 1; \
		done; \
	done

## tools: install the pinned Go tools the tests and generators use
tools:
	$(GO) install github.com/google/go-containerregistry/cmd/crane@$(CRANE_VERSION)
	$(GO) install github.com/regclient/regclient/cmd/regctl@$(REGCTL_VERSION)
	$(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)
	$(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	$(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)
	command -v helm >/dev/null || $(GO) install helm.sh/helm/v3/cmd/helm@$(HELM_VERSION)

## manifests: render the Helm chart into plain manifests for kubectl users
# (without generated keys: in a committed file they would be every user's)
manifests:
	helm template shoal deploy/helm/shoal --namespace shoal --set tls.generate=false --set p2p.psk.generate=false --set capabilities.generate=false > deploy/kubernetes/shoal.yaml

## k8s-bins: the single-node Kubernetes the live-cluster test runs, built from the
## k8s.io/kubernetes module (e2e/k8s/kubebuild pins it) into K8S_BIN, once: ~6 min of
## both cores cold, so .ci/run does it while preparing and make test only uses it
K8S_VERSION     := v1.34.4
COREDNS_VERSION := v1.12.4
K8S_BIN         ?= $(HOME)/.cache/shoal/k8s-$(K8S_VERSION)
K8S_CMDS        := kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl
# Helm's kubeVersion checks and the apiserver's /version read these; a fixed
# build date keeps the binaries the same from one machine to the next.
K8S_LDFLAGS := -s -w $(foreach p,k8s.io/client-go/pkg/version k8s.io/component-base/version,\
	-X $(p).gitVersion=$(K8S_VERSION) -X $(p).gitMajor=1 -X $(p).gitMinor=34 \
	-X $(p).gitTreeState=clean -X $(p).buildDate=1970-01-01T00:00:00Z)
k8s-bins:
	@mkdir -p $(K8S_BIN)
	@cd e2e/k8s/kubebuild && for c in $(K8S_CMDS); do \
		[ -x $(K8S_BIN)/$$c ] && continue; \
		echo "go build $(K8S_BIN)/$$c"; \
		CGO_ENABLED=0 $(GO) build -trimpath -buildvcs=false -ldflags '$(K8S_LDFLAGS)' \
			-o $(K8S_BIN)/$$c.tmp k8s.io/kubernetes/cmd/$$c && mv $(K8S_BIN)/$$c.tmp $(K8S_BIN)/$$c || exit 1; \
	done
	@[ -x $(K8S_BIN)/coredns ] || { echo "go install coredns@$(COREDNS_VERSION)"; \
		GOBIN=$(K8S_BIN) CGO_ENABLED=0 $(GO) install -trimpath -buildvcs=false -ldflags '-s -w' \
			github.com/coredns/coredns@$(COREDNS_VERSION); }

clean:
	rm -rf $(BIN)
