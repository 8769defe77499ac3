# devgate — see README.md. Every target works offline once modules are downloaded.
GO       ?= go
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -s -w -X main.version=$(VERSION)
FUZZTIME ?= 20s
PKGS     := ./...

# Code generation, pinned; protoc 3.21 from Debian (protobuf-compiler, libprotobuf-dev).
PROTOC_GEN_GO      := google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
PROTOC_GEN_GO_GRPC := google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2
TOOLS              := $(CURDIR)/bin/tools

IMAGE_REPO ?= ghcr.io/devgate/devgate

.PHONY: all build run test test-short vet fmt fuzz bench bench-suite bench-micro proto image e2e clean

all: vet test build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/devgate ./cmd/devgate

# All-in-one local cluster: demo backends and a gateway on 127.0.0.1:9000.
run: build
	./bin/devgate dev

# The test suite CI runs (race detector on; real sockets on loopback).
# One package at a time (-p 1): several tests hold timing bounds (join
# within 1 s, eviction pace +/-10%) that two cores shared by parallel
# packages under -race cannot keep.
test:
	$(GO) test -race -count=1 -p 1 -timeout 10m $(PKGS)
	DEVGATE_TEST_EVENTLOOP=1 $(GO) test -race -count=1 -timeout 5m ./pkg/proxy/

# End-to-end cluster suite: 3 etcd members, 3 replicas behind HAProxy, Go and
# Netty backends, all separate processes on loopback; about 4 minutes.
e2e:
	ulimit -n 20000 2>/dev/null || true; $(GO) test -tags e2e -count=1 -v -timeout 15m ./test/e2e/

test-short:
	$(GO) test -short -count=1 $(PKGS)

vet:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo 'gofmt needed'; exit 1; }
	$(GO) vet $(PKGS)
	$(GO) vet -tags e2e ./test/e2e/

fmt:
	gofmt -w $$(git ls-files '*.go')

# Every fuzz target for FUZZTIME each. The inputs the fuzzer found
# interesting are copied into the package's testdata/fuzz, so plain
# `go test` replays them from then on; crashers land there by themselves.
fuzz:
	@set -e; cache=$$($(GO) env GOCACHE)/fuzz; \
	for pkg in $$($(GO) list ./...); do \
	  dir=$$($(GO) list -f '{{.Dir}}' $$pkg); \
	  for t in $$(grep -ho '^func Fuzz[A-Za-z0-9_]*' $$dir/*_test.go 2>/dev/null | sed 's/func //'); do \
	    echo "== $$pkg $$t"; $(GO) test -run='^$$' -fuzz="^$$t$$" -fuzztime=$(FUZZTIME) $$pkg; \
	    if [ -d $$cache/$$pkg/$$t ]; then mkdir -p $$dir/testdata/fuzz/$$t; cp -n $$cache/$$pkg/$$t/* $$dir/testdata/fuzz/$$t/ 2>/dev/null || true; fi; \
	  done; \
	done

# Issue 4's suite: devgate vs HAProxy vs nginx+njs on loopback, interleaved,
# medians of 5, ratios to direct; writes docs/benchmarks/ (about 9 minutes).
# Needs Debian's haproxy nginx libnginx-mod-stream-js gnuplot-nox.
bench: bench-micro bench-suite

bench-suite: build
	$(GO) run ./test/bench/run --devgate bin/devgate --out docs/benchmarks

# Hot-path micro-benchmarks (frame parse + key, ring lookup).
bench-micro:
	$(GO) test -run='^$$' -bench=. -benchmem -count=5 ./pkg/frame/ ./pkg/ring/ ./pkg/proxy/

# OCI image without a Docker daemon: the static binary on an empty base, user
# 65532. Writes bin/image (OCI layout) and bin/devgate-image.tar (docker/podman load).
image: build
	$(GO) run ./internal/image --binary bin/devgate --version $(VERSION) \
	  --revision=$$(git rev-parse HEAD 2>/dev/null) --repo $(IMAGE_REPO) \
	  --oci bin/image --tar bin/devgate-image.tar

# Regenerates api/ from admin.proto (offline once the module cache has the plugins).
proto:
	@command -v protoc >/dev/null || { echo 'protoc missing: apt-get install -y protobuf-compiler libprotobuf-dev'; exit 1; }
	GOBIN=$(TOOLS) $(GO) install $(PROTOC_GEN_GO)
	GOBIN=$(TOOLS) $(GO) install $(PROTOC_GEN_GO_GRPC)
	PATH=$(TOOLS):$$PATH protoc -I api -I /usr/include \
	  --go_out=api --go_opt=paths=source_relative \
	  --go-grpc_out=api --go-grpc_opt=paths=source_relative \
	  api/devgate/admin/v1/admin.proto

clean:
	rm -rf bin
