# syntax=docker/dockerfile:1
# devgate's container image, built by Docker or BuildKit:
#
#   docker build --build-arg VERSION=$(git describe --tags --always --dirty) \
#       -t ghcr.io/devgate/devgate:v0.1.0 .
#
# `make image` builds the equivalent image without a Docker daemon (see
# internal/image). The binary is static (CGO_ENABLED=0) and runs as the
# non-root user 65532, as deploy/k8s expects.

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

FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION=dev
LABEL org.opencontainers.image.title="devgate" \
      org.opencontainers.image.description="TCP gateway cluster for long-lived device connections" \
      org.opencontainers.image.source="https://github.com/devgate/devgate" \
      org.opencontainers.image.version="${VERSION}"
COPY --from=build /out/devgate /devgate
USER 65532:65532
EXPOSE 9000 9090 9091
ENTRYPOINT ["/devgate"]
CMD ["serve", "--config=/etc/devgate/devgate.yaml"]
