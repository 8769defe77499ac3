# devgate — see README.md. Every target works offline once modules are downloaded.
GO       ?= go
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
REVISION ?= $(shell git rev-parse HEAD 2>/dev/null)
LDFLAGS  := -s -w -X main.version=$(VERSION) -X main.revision=$(REVISION)
FUZZTIME ?= 20s
PKGS     := ./...

# Code generation, pinned; protoc 3.21 from Debian (protobuf-compiler, libprotobuf-dev).
PROTOC_GEN_GO      := google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
PROTOC_GEN_GO_GRPC := google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2
TOOLS              := $(CURDIR)/bin/tools

IMAGE_REPO ?= ghcr.io/devgate/devgate

.PHONY: all build run test test-short vet fmt fuzz bench bench-suite bench-micro bench-scale proto image e2e k8s-validate clean

all: vet test build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/devgate ./cmd/devgate

# All-in-one local cluster: demo backends and a gateway on 127.0.0.1:9000.
run: build
	./bin/devgate dev

# The test suite CI runs (race detector on; real sockets on loopback);
# about 9 minutes on 2 cores from a fresh clone. One package at a time:
# several tests hold timing bounds (join within 1 s, eviction pace +/-10%)
# that two cores shared by parallel packages under -race cannot keep. Each
# package is named as it starts, with the time so far; failures are listed
# at the end. CI=1 or DEVGATE_REQUIRE_ALL=1: a missing python3, JDK, Netty
# or HAProxy fails the tests that need it instead of skipping them.
TEST_PKGS = $$($(GO) list -f '{{if or .TestGoFiles .XTestGoFiles}}{{.ImportPath}}{{end}}' $(PKGS))
test:
	@t0=$$(date +%s); fail=; i=0; pkgs=$(TEST_PKGS) || exit 1; n=$$(echo $$pkgs | wc -w); \
	for p in $$pkgs; do i=$$((i+1)); \
	  echo "== [$$i/$$n $$(( $$(date +%s) - t0 ))s] $$p"; \
	  $(GO) test -race -count=1 -timeout 10m $$p || fail="$$fail $$p"; \
	done; \
	echo "== $$(( $$(date +%s) - t0 ))s deploy/k8s/monitoring (its own module: alert rules and dashboard against a real devgate)"; \
	(cd deploy/k8s/monitoring/check && $(GO) test -count=1 -timeout 5m ./...) || fail="$$fail deploy/k8s/monitoring"; \
	echo "== $$(( $$(date +%s) - t0 ))s"; \
	if [ -n "$$fail" ]; then echo "FAIL:$$fail"; exit 1; fi

# End-to-end cluster suite: 3 etcd members, 3 replicas behind HAProxy, Go and
# Netty backends, all separate processes on loopback; about 4 minutes.
e2e:
	ulimit -n 20000 2>/dev/null || true; $(GO) test -tags e2e -count=1 -v -timeout 15m ./test/e2e/

# deploy/k8s through a real kube-apiserver (the version pinned in
# deploy/k8s/apiserver/go.mod) on an embedded etcd: every overlay with
# server-side dry-run, and the API server's rejections of broken copies.
# The first build of kube-apiserver takes a while (about 25 minutes on 2 busy
# cores); then bin/kube-apiserver is reused until that go.mod changes.
KUBE_VERSION   := v1.34.2
KUBE_APISERVER := bin/kube-apiserver
$(KUBE_APISERVER): deploy/k8s/apiserver/go.mod deploy/k8s/apiserver/go.sum
	cd deploy/k8s/apiserver && $(GO) build -trimpath -o $(CURDIR)/$@ \
	  -ldflags '-X k8s.io/component-base/version.gitVersion=$(KUBE_VERSION)' k8s.io/kubernetes/cmd/kube-apiserver

k8s-validate: $(KUBE_APISERVER)
	DEVGATE_KUBE_APISERVER=$(CURDIR)/$(KUBE_APISERVER) $(GO) test -count=1 -v -run '^TestAPIServer$$' -timeout 20m ./deploy/k8s/

test-short:
	$(GO) test -short -count=1 $(PKGS)

vet:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo 'gofmt needed'; exit 1; }
	$(GO) vet $(PKGS)
	$(GO) vet -tags e2e ./test/e2e/
	cd deploy/k8s/monitoring/check && $(GO) vet ./...

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

# Hot-path micro-benchmarks (key frame + devid, ring lookup), each next to a
# baseline from the same run; benchstat tables in docs/benchmarks/micro.md.
BENCHSTAT := $(TOOLS)/benchstat
$(BENCHSTAT):
	GOBIN=$(TOOLS) $(GO) install golang.org/x/perf/cmd/benchstat@v0.0.0-20260908200009-22c9c6c9d4da

# Scale run (docs/capacity.md): 4 gateways x 9,000 idle devices, then HAProxy
# at 9,000; memory, files and ports per device. Not part of make test or bench.
bench-scale: build
	test/bench/scale.sh bin/devgate docs/benchmarks/scale

bench-micro: $(BENCHSTAT)
	$(GO) test -run='^$$' -bench='^Benchmark(KeyFrame|Lookup)$$' -benchmem -count=10 ./pkg/frame/ ./pkg/ring/ > docs/benchmarks/micro.txt
	{ printf '# Hot-path micro-benchmarks\n\nGenerated by `make bench-micro` (10 runs each; raw: [micro.txt](micro.txt)). Targets: key frame + devid <= 1 us and 0 allocs for a ~200-byte login; ring lookup <= 100 ns.\n\n```\n'; \
	  $(BENCHSTAT) -col /impl docs/benchmarks/micro.txt; printf '```\n'; } > docs/benchmarks/micro.md

# OCI image without a Docker daemon: the static binary, CA certificates and
# /tmp on an empty base, user 65532 (internal/image; the Dockerfile builds the
# same). Writes bin/image (OCI layout) and bin/devgate-image.tar (docker/podman load).
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
