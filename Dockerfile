# syntax=docker/dockerfile:1
# devgate's container image, built by Docker or BuildKit:
#
#   docker build --build-arg VERSION=$(git describe --tags --always --dirty) \
#       -t ghcr.io/devgate/devgate:v0.1.0 .
#
# `make image` builds the same image without a Docker daemon. Its contents
# have one definition, internal/image: this file runs it for the layer
# (--layer) and extracts that on scratch: the static binary, Debian's CA
# certificates, /tmp (1777), passwd/group for the non-root user 65532 the
# image runs as (deploy/k8s expects it). internal/image's tests check that
# the config below matches.

FROM golang:1.26.8 AS build
WORKDIR /src
ENV CGO_ENABLED=0 GOFLAGS=-buildvcs=false GOTOOLCHAIN=local
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
ARG TARGETOS=linux
ARG TARGETARCH=amd64
RUN GOOS=$TARGETOS GOARCH=$TARGETARCH go build -trimpath \
      -ldflags "-s -w -X main.version=${VERSION}" -o /out/devgate ./cmd/devgate
# The golang image is Debian with ca-certificates: the bundle comes from there.
RUN go run ./internal/image --binary /out/devgate --version "${VERSION}" \
      --ca-certs /etc/ssl/certs/ca-certificates.crt --layer /out/rootfs.tar \
 && mkdir /rootfs && tar -xpf /out/rootfs.tar --numeric-owner -C /rootfs

FROM scratch
ARG VERSION=dev
LABEL org.opencontainers.image.title="devgate" \
      org.opencontainers.image.description="TCP gateway cluster for long-lived device connections" \
      org.opencontainers.image.source="https://github.com/devgate/devgate" \
      org.opencontainers.image.version="${VERSION}"
COPY --from=build /rootfs/ /
# COPY makes everything root's; the user's home is the user's.
COPY --from=build --chown=65532:65532 /rootfs/home/nonroot/ /home/nonroot/
USER 65532:65532
WORKDIR /
EXPOSE 9000 9090 9091
ENTRYPOINT ["/devgate"]
CMD ["serve", "--config=/etc/devgate/devgate.yaml"]
