package main

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

var testOpts = options{Version: "v1.2.3", Revision: "abc123", Arch: "amd64", Created: time.Unix(1700000000, 0).UTC(),
	CACerts: []byte("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")}

func TestBuildConfig(t *testing.T) {
	img, err := build([]byte("binary"), testOpts)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	c := cf.Config
	if c.User != "65532:65532" || !reflect.DeepEqual(c.Entrypoint, []string{"/devgate"}) {
		t.Errorf("user %q entrypoint %q", c.User, c.Entrypoint)
	}
	if c.Labels["org.opencontainers.image.version"] != "v1.2.3" || c.Labels["org.opencontainers.image.revision"] != "abc123" {
		t.Errorf("labels %v", c.Labels)
	}
	if cf.OS != "linux" || cf.Architecture != "amd64" || !cf.Created.Time.Equal(testOpts.Created) {
		t.Errorf("platform %s/%s created %v", cf.OS, cf.Architecture, cf.Created)
	}
	if mt, _ := img.MediaType(); mt != types.OCIManifestSchema1 {
		t.Errorf("manifest media type %s", mt)
	}
	layers, err := img.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("%d layers, %v: want one on an empty base", len(layers), err)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	found := false
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Name == "devgate" {
			b, _ := io.ReadAll(tr)
			found = string(b) == "binary" && h.Mode == 0o555 && h.Uid == 0
		}
	}
	if !found {
		t.Error("layer lacks /devgate with the binary, mode 0555, owned by root")
	}
}

func TestBuildReproducible(t *testing.T) {
	a, _ := build([]byte("binary"), testOpts)
	b, _ := build([]byte("binary"), testOpts)
	c, _ := build([]byte("binary2"), testOpts)
	da, _ := a.Digest()
	db, _ := b.Digest()
	dc, _ := c.Digest()
	if da != db || da == dc {
		t.Errorf("digests %s %s %s: same input must give the same image, other input another", da, db, dc)
	}
}

func TestWriteLayoutAndTarball(t *testing.T) {
	img, err := build([]byte("binary"), testOpts)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "oci")
	if err := writeLayout(dir, img, "v1.2.3"); err != nil {
		t.Fatal(err)
	}
	var index v1.IndexManifest
	b, err := os.ReadFile(filepath.Join(dir, "index.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &index); err != nil || len(index.Manifests) != 1 {
		t.Fatalf("index.json: %v %s", err, b)
	}
	// Every blob is named by its content's sha256, and the manifest's are there.
	blobs, _ := filepath.Glob(filepath.Join(dir, "blobs", "sha256", "*"))
	if len(blobs) != 3 {
		t.Errorf("%d blobs, want manifest, config, layer", len(blobs))
	}
	for _, p := range blobs {
		data, _ := os.ReadFile(p)
		sum := sha256.Sum256(data)
		if hex.EncodeToString(sum[:]) != filepath.Base(p) {
			t.Errorf("blob %s does not match its digest", p)
		}
	}
	want, _ := img.Digest()
	if index.Manifests[0].Digest != want {
		t.Errorf("index names %s, image is %s", index.Manifests[0].Digest, want)
	}

	tarPath := filepath.Join(t.TempDir(), "image.tar")
	tag := name.MustParseReference("ghcr.io/devgate/devgate:v1.2.3")
	if err := tarball.WriteToFile(tarPath, tag, img); err != nil {
		t.Fatal(err)
	}
	back, err := tarball.ImageFromPath(tarPath, nil)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := back.ConfigName()
	if w, _ := img.ConfigName(); got != w {
		t.Errorf("tarball config %s, image config %s", got, w)
	}
}

func TestCheckStaticRefusesNonELF(t *testing.T) {
	p := filepath.Join(t.TempDir(), "devgate")
	os.WriteFile(p, []byte("#!/bin/sh\n"), 0o755)
	if _, err := checkStatic(p); err == nil {
		t.Error("a script passed as a static binary")
	}
}

func TestTagFor(t *testing.T) {
	for in, want := range map[string]string{"v0.1.0": "v0.1.0", "v0.1.0-3-gabc-dirty": "v0.1.0-3-gabc-dirty", "1.0+meta": "1.0-meta", "": "v"} {
		if got := tagFor(in); got != want {
			t.Errorf("tagFor(%q) = %q, want %q", in, got, want)
		}
		if _, err := name.NewTag("example.com/x:"+tagFor(in), name.StrictValidation); err != nil {
			t.Errorf("tagFor(%q): %v", in, err)
		}
	}
}

// TestImageHasCertsAndTmp builds an image through run, as `make image`
// does, reads it back from the OCI layout and the tarball, and wants the CA
// bundle and a sticky world-writable /tmp in its layers; the --layer file
// the Dockerfile extracts is that same layer.
func TestImageHasCertsAndTmp(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "devgate")
	os.WriteFile(filepath.Join(dir, "main.go"), []byte("package main\n\nfunc main() {}\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module x\n\ngo 1.22\n"), 0o644)
	cmd := exec.Command("go", "build", "-o", bin, ".")
	cmd.Dir, cmd.Env = dir, append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	certs := []byte("-----BEGIN CERTIFICATE-----\nMIIBtest\n-----END CERTIFICATE-----\n")
	certsPath := filepath.Join(dir, "ca.crt")
	os.WriteFile(certsPath, certs, 0o644)
	oci, tarPath, layerPath := filepath.Join(dir, "oci"), filepath.Join(dir, "image.tar"), filepath.Join(dir, "layer.tar")
	if err := run([]string{"--binary", bin, "--ca-certs", certsPath, "--oci", oci, "--tar", tarPath, "--layer", layerPath}); err != nil {
		t.Fatal(err)
	}

	fromLayout, err := readLayout(oci)
	if err != nil {
		t.Fatal(err)
	}
	fromTar, err := tarball.ImageFromPath(tarPath, nil)
	if err != nil {
		t.Fatal(err)
	}
	for src, img := range map[string]v1.Image{"oci layout": fromLayout, "tarball": fromTar} {
		files := map[string]*tar.Header{}
		var gotCerts []byte
		layers, err := img.Layers()
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range layers {
			rc, err := l.Uncompressed()
			if err != nil {
				t.Fatal(err)
			}
			tr := tar.NewReader(rc)
			for {
				h, err := tr.Next()
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				files[h.Name] = h
				if h.Name == "etc/ssl/certs/ca-certificates.crt" {
					gotCerts, _ = io.ReadAll(tr)
				}
			}
			rc.Close()
		}
		if h := files["tmp/"]; h == nil || h.Typeflag != tar.TypeDir || h.Mode != 0o1777 || h.FileInfo().Mode()&fs.ModeSticky == 0 {
			t.Errorf("%s: tmp/ is %+v, want a directory with mode 1777", src, h)
		}
		if h := files["etc/ssl/certs/ca-certificates.crt"]; h == nil || h.Typeflag != tar.TypeReg || h.Mode&0o444 != 0o444 || string(gotCerts) != string(certs) {
			t.Errorf("%s: etc/ssl/certs/ca-certificates.crt is %+v with %q, want the bundle, world-readable", src, h, gotCerts)
		}
		if h := files["home/nonroot/"]; h == nil || h.Uid != 65532 {
			t.Errorf("%s: home/nonroot/ is %+v, want owned by 65532", src, h)
		}
		if cf, err := img.ConfigFile(); err != nil || cf.Config.User != User {
			t.Errorf("%s: user %v %v", src, cf, err)
		}
		// The Dockerfile's image is this layer, extracted.
		diffs, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		lb, err := os.ReadFile(layerPath)
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(lb)
		if want := diffs.RootFS.DiffIDs[0].Hex; hex.EncodeToString(sum[:]) != want {
			t.Errorf("%s: --layer file is not the image's layer (diff id %s)", src, want)
		}
	}
}

func TestMissingCACertsFail(t *testing.T) {
	if _, err := readCACerts(filepath.Join(t.TempDir(), "none.crt")); err == nil || !strings.Contains(err.Error(), "ca-certificates") {
		t.Errorf("missing bundle: %v", err)
	}
	empty := filepath.Join(t.TempDir(), "empty.crt")
	os.WriteFile(empty, nil, 0o644)
	if _, err := readCACerts(empty); err == nil {
		t.Error("a bundle without certificates was accepted")
	}
}

// readLayout reads the one image of an OCI layout by hand: index.json, the
// manifest, the layers, each a blob named by its digest.
func readLayout(dir string) (v1.Image, error) {
	blob := func(h v1.Hash) ([]byte, error) { return os.ReadFile(filepath.Join(dir, "blobs", h.Algorithm, h.Hex)) }
	b, err := os.ReadFile(filepath.Join(dir, "index.json"))
	if err != nil {
		return nil, err
	}
	var index v1.IndexManifest
	if err := json.Unmarshal(b, &index); err != nil || len(index.Manifests) != 1 {
		return nil, fmt.Errorf("index.json %s: %v", b, err)
	}
	mb, err := blob(index.Manifests[0].Digest)
	if err != nil {
		return nil, err
	}
	var m v1.Manifest
	if err := json.Unmarshal(mb, &m); err != nil {
		return nil, err
	}
	cb, err := blob(m.Config.Digest)
	if err != nil {
		return nil, err
	}
	img := mutate.MediaType(empty.Image, m.MediaType)
	img = mutate.ConfigMediaType(img, m.Config.MediaType)
	for _, d := range m.Layers {
		lb, err := blob(d.Digest)
		if err != nil {
			return nil, err
		}
		l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(lb)), nil })
		if err != nil {
			return nil, err
		}
		if img, err = mutate.AppendLayers(img, l); err != nil {
			return nil, err
		}
	}
	cf, err := v1.ParseConfigFile(bytes.NewReader(cb))
	if err != nil {
		return nil, err
	}
	return mutate.ConfigFile(img, cf)
}

// TestDockerfileAgrees: the Dockerfile cannot be built here (no daemon), so
// its instructions are checked against the config build writes.
func TestDockerfileAgrees(t *testing.T) {
	b, err := os.ReadFile("../../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	img, err := build([]byte("binary"), testOpts)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	c := cf.Config
	entry, _ := json.Marshal(c.Entrypoint)
	cmd, _ := json.Marshal(c.Cmd)
	var ports []string
	for p := range c.ExposedPorts {
		ports = append(ports, strings.TrimSuffix(p, "/tcp"))
	}
	sort.Strings(ports)
	want := []string{
		"FROM scratch\n",
		"--layer /out/rootfs.tar",
		"COPY --from=build /rootfs/ /\n",
		"USER " + c.User + "\n",
		"WORKDIR " + c.WorkingDir + "\n",
		"EXPOSE " + strings.Join(ports, " ") + "\n",
		"ENTRYPOINT " + strings.ReplaceAll(string(entry), ",", ", ") + "\n",
		"CMD " + strings.ReplaceAll(string(cmd), ",", ", ") + "\n",
	}
	for _, w := range want {
		if !strings.Contains(string(b), w) {
			t.Errorf("Dockerfile lacks %q", w)
		}
	}
}
