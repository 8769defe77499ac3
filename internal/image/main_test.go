package main

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

var testOpts = options{Version: "v1.2.3", Revision: "abc123", Arch: "amd64", Created: time.Unix(1700000000, 0).UTC()}

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
