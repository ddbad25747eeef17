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

.PHONY: all build test test-short demo proto lint bench fuzz tools manifests clean

all: build

## build: compile bin/shoal-<component> for every command under cmd/
build:
	@mkdir -p $(BIN)
	@for c in $(COMMANDS); do \
		[ -n "$$(ls cmd/$$c/*.go 2>/dev/null)" ] || continue; \
		echo "go build -o $(BIN)/shoal-$$c ./cmd/$$c"; \
		$(GO) build -trimpath -o $(BIN)/shoal-$$c ./cmd/$$c || exit 1; \
	done

## test: the whole suite, with the race detector (what CI runs)
test: build
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' | grep -v '\.pb\.go$$')); \
		if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...
	SHOAL_BIN=$(CURDIR)/$(BIN) $(GO) test -race -count=1 -timeout 12m ./...

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

clean:
	rm -rf $(BIN)
