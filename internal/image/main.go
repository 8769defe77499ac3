// Command image builds devgate's container image without a Docker daemon
// and without network: one layer on an empty base (scratch) holding the
// static binary from `make build`, the build machine's CA certificates
// (Debian's ca-certificates bundle, for https etcd and backend TLS with
// system roots), a /tmp (1777) and passwd/group naming the non-root user
// 65532 it runs as; entrypoint /devgate, the version in its labels. It is
// the image's only definition: the Dockerfile extracts the same layer
// (--layer). It writes an OCI image layout directory and a tarball that
// `docker load` and `podman load` read.
//
//	go run ./internal/image --binary bin/devgate --version v0.1.0 \
//	    --repo ghcr.io/devgate/devgate --oci bin/image --tar bin/devgate-image.tar
//
// Push it with a registry client of your choice, for example
// `skopeo copy oci:bin/image docker://ghcr.io/devgate/devgate:v0.1.0` or
// `crane push bin/devgate-image.tar ghcr.io/devgate/devgate:v0.1.0`.
// The build is reproducible: file times and the creation time come from
// SOURCE_DATE_EPOCH (default 0).
package main

import (
	"archive/tar"
	"bytes"
	"debug/elf"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// User is the numeric user and group the image runs as (distroless's
// "nonroot"); the Kubernetes manifests run as the same.
const User = "65532:65532"

// DefaultCACerts is where Debian's ca-certificates puts the bundle; the
// image carries it at the same path, where Go's crypto/x509 looks first.
const DefaultCACerts = "/etc/ssl/certs/ca-certificates.crt"

// options describe the image around the binary.
type options struct {
	Version  string    // label org.opencontainers.image.version and the tag
	Revision string    // label org.opencontainers.image.revision; optional
	Arch     string    // GOARCH of the binary
	Created  time.Time // creation time and file times
	CACerts  []byte    // PEM bundle for /etc/ssl/certs/ca-certificates.crt
}

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "image: %v\n", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("image", flag.ContinueOnError)
	binary := fs.String("binary", "bin/devgate", "static linux binary (CGO_ENABLED=0)")
	version := fs.String("version", "dev", "version label and image tag")
	revision := fs.String("revision", "", "source revision label (git commit)")
	repo := fs.String("repo", "ghcr.io/devgate/devgate", "image repository the tag names")
	ociDir := fs.String("oci", "", "write an OCI image layout to this directory (replaced)")
	tarPath := fs.String("tar", "", "write a docker/podman-loadable tarball to this file")
	layerPath := fs.String("layer", "", "write the image's filesystem layer (uncompressed tar) to this file; the Dockerfile uses it")
	caCerts := fs.String("ca-certs", DefaultCACerts, "PEM CA bundle copied into the image (Debian: apt-get install ca-certificates)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if *ociDir == "" && *tarPath == "" && *layerPath == "" {
		return errors.New("nothing to write: give --oci DIR, --tar FILE and/or --layer FILE")
	}
	arch, err := checkStatic(*binary)
	if err != nil {
		return err
	}
	bin, err := os.ReadFile(*binary)
	if err != nil {
		return err
	}
	certs, err := readCACerts(*caCerts)
	if err != nil {
		return err
	}
	created, err := sourceDate()
	if err != nil {
		return err
	}
	o := options{Version: *version, Revision: *revision, Arch: arch, Created: created, CACerts: certs}
	if *layerPath != "" {
		layer, err := rootfs(bin, o)
		if err != nil {
			return err
		}
		if err := os.WriteFile(*layerPath, layer, 0o644); err != nil {
			return fmt.Errorf("layer: %w", err)
		}
	}
	img, err := build(bin, o)
	if err != nil {
		return err
	}
	tag, err := name.NewTag(*repo + ":" + tagFor(*version))
	if err != nil {
		return err
	}
	if *ociDir != "" {
		if err := writeLayout(*ociDir, img, tag.TagStr()); err != nil {
			return fmt.Errorf("oci layout %s: %w", *ociDir, err)
		}
	}
	if *tarPath != "" {
		if err := tarball.WriteToFile(*tarPath, tag, img); err != nil {
			return fmt.Errorf("tarball %s: %w", *tarPath, err)
		}
	}
	d, err := img.Digest()
	if err != nil {
		return err
	}
	fmt.Printf("%s %s linux/%s\n", tag, d, arch)
	return nil
}

// checkStatic refuses a binary that needs a dynamic loader (scratch has
// none) and returns its GOARCH.
func checkStatic(path string) (string, error) {
	f, err := elf.Open(path)
	if err != nil {
		return "", fmt.Errorf("%s: not a linux binary: %w", path, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return "", fmt.Errorf("%s is dynamically linked: build it with CGO_ENABLED=0 (make build)", path)
		}
	}
	switch f.Machine {
	case elf.EM_X86_64:
		return "amd64", nil
	case elf.EM_AARCH64:
		return "arm64", nil
	}
	return "", fmt.Errorf("%s: unsupported machine %v", path, f.Machine)
}

// readCACerts reads the CA bundle and refuses one without a certificate:
// an image that cannot verify TLS peers fails late and far from here.
func readCACerts(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("CA certificates: %w (Debian: apt-get install ca-certificates, or give --ca-certs FILE)", err)
	}
	if !bytes.Contains(b, []byte("-----BEGIN CERTIFICATE-----")) {
		return nil, fmt.Errorf("CA certificates %s: no PEM certificate in it", path)
	}
	return b, nil
}

// sourceDate is SOURCE_DATE_EPOCH, or the Unix epoch.
func sourceDate() (time.Time, error) {
	s := os.Getenv("SOURCE_DATE_EPOCH")
	if s == "" {
		return time.Unix(0, 0).UTC(), nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("SOURCE_DATE_EPOCH %q: %w", s, err)
	}
	return time.Unix(n, 0).UTC(), nil
}

// tagFor turns a version (git describe output) into a valid image tag.
func tagFor(version string) string {
	t := regexp.MustCompile(`[^A-Za-z0-9_.-]`).ReplaceAllString(version, "-")
	if t == "" || t[0] == '.' || t[0] == '-' {
		t = "v" + t
	}
	return t[:min(len(t), 128)]
}

// build puts the binary at /devgate on an empty base.
func build(bin []byte, o options) (v1.Image, error) {
	layerTar, err := rootfs(bin, o)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, err
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.Append(img, mutate.Addendum{
		Layer:   layer,
		History: v1.History{Created: v1.Time{Time: o.Created}, CreatedBy: "go run ./internal/image", Comment: "devgate " + o.Version},
	})
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", o.Arch
	cf.Created = v1.Time{Time: o.Created}
	labels := map[string]string{
		"org.opencontainers.image.title":       "devgate",
		"org.opencontainers.image.description": "TCP gateway cluster for long-lived device connections",
		"org.opencontainers.image.version":     o.Version,
		"org.opencontainers.image.source":      "https://github.com/devgate/devgate",
	}
	if o.Revision != "" {
		labels["org.opencontainers.image.revision"] = o.Revision
	}
	cf.Config = v1.Config{
		Entrypoint:   []string{"/devgate"},
		Cmd:          []string{"serve", "--config=/etc/devgate/devgate.yaml"},
		User:         User,
		WorkingDir:   "/",
		Labels:       labels,
		ExposedPorts: map[string]struct{}{"9000/tcp": {}, "9090/tcp": {}, "9091/tcp": {}},
	}
	return mutate.ConfigFile(img, cf)
}

// rootfs is the image's only layer: the binary, CA certificates, a
// world-writable sticky /tmp (`devgate dev` and TLS libraries want one),
// and passwd/group files naming the non-root user for tools that look it
// up, with its home as distroless has it.
func rootfs(bin []byte, o options) ([]byte, error) {
	const nonroot = 65532
	if len(o.CACerts) == 0 {
		return nil, errors.New("no CA certificates: the image could not verify TLS peers")
	}
	entries := []struct {
		name string
		mode int64 // with the sticky bit (01000) as tar stores it
		uid  int
		data []byte // nil for a directory
	}{
		{"devgate", 0o555, 0, bin},
		{"etc/", 0o755, 0, nil},
		{"etc/group", 0o444, 0, []byte("root:x:0:\nnonroot:x:65532:\n")},
		{"etc/passwd", 0o444, 0, []byte("root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n")},
		{"etc/ssl/", 0o755, 0, nil},
		{"etc/ssl/certs/", 0o755, 0, nil},
		{"etc/ssl/certs/ca-certificates.crt", 0o444, 0, o.CACerts},
		{"home/", 0o755, 0, nil},
		{"home/nonroot/", 0o700, nonroot, nil},
		{"tmp/", 0o1777, 0, nil},
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{Typeflag: tar.TypeDir, Name: e.name, Mode: e.mode, Uid: e.uid, Gid: e.uid, ModTime: o.Created, Format: tar.FormatPAX}
		if e.data != nil {
			h.Typeflag, h.Size = tar.TypeReg, int64(len(e.data))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(e.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// writeLayout writes img as an OCI image layout (image-spec
// image-layout.md): oci-layout, index.json and blobs/sha256.
func writeLayout(dir string, img v1.Image, tag string) error {
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	blobs := filepath.Join(dir, "blobs", "sha256")
	if err := os.MkdirAll(blobs, 0o755); err != nil {
		return err
	}
	put := func(h v1.Hash, r io.Reader) error {
		f, err := os.Create(filepath.Join(blobs, h.Hex))
		if err != nil {
			return err
		}
		if _, err := io.Copy(f, r); err != nil {
			f.Close()
			return err
		}
		return f.Close()
	}
	layers, err := img.Layers()
	if err != nil {
		return err
	}
	for _, l := range layers {
		h, err := l.Digest()
		if err != nil {
			return err
		}
		rc, err := l.Compressed()
		if err != nil {
			return err
		}
		err = put(h, rc)
		rc.Close()
		if err != nil {
			return err
		}
	}
	cfg, err := img.RawConfigFile()
	if err != nil {
		return err
	}
	cfgName, err := img.ConfigName()
	if err != nil {
		return err
	}
	if err := put(cfgName, bytes.NewReader(cfg)); err != nil {
		return err
	}
	manifest, err := img.RawManifest()
	if err != nil {
		return err
	}
	digest, err := img.Digest()
	if err != nil {
		return err
	}
	if err := put(digest, bytes.NewReader(manifest)); err != nil {
		return err
	}
	mt, err := img.MediaType()
	if err != nil {
		return err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return err
	}
	index := v1.IndexManifest{
		SchemaVersion: 2,
		MediaType:     types.OCIImageIndex,
		Manifests: []v1.Descriptor{{
			MediaType:   mt,
			Digest:      digest,
			Size:        int64(len(manifest)),
			Platform:    &v1.Platform{OS: cf.OS, Architecture: cf.Architecture},
			Annotations: map[string]string{"org.opencontainers.image.ref.name": tag},
		}},
	}
	ib, err := json.MarshalIndent(index, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "index.json"), ib, 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644)
}
