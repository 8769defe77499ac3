package frame

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"os"
	"testing"
)

// vector is one case of testdata/vectors.json (see its comment).
type vector struct {
	Name    string
	Matcher struct {
		Frame     Config
		KeyTypes  []int
		MaxFrames int
		MaxBytes  int
		MaxKeyLen int
		JSONPath  string
		ByteRange []int
	}
	Input  string
	Key    string
	Reason string
}

func loadVectors(tb testing.TB) []vector {
	tb.Helper()
	data, err := os.ReadFile("testdata/vectors.json")
	if err != nil {
		tb.Fatal(err)
	}
	var doc struct {
		Comment string
		Vectors []vector
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&doc); err != nil {
		tb.Fatalf("testdata/vectors.json: %v", err)
	}
	return doc.Vectors
}

// build returns the vector's Matcher and decoded input.
func (v *vector) build(tb testing.TB) (*Matcher, []byte) {
	tb.Helper()
	in, err := hex.DecodeString(v.Input)
	if err != nil {
		tb.Fatalf("%s: input: %v", v.Name, err)
	}
	vm := v.Matcher
	m := &Matcher{Frame: vm.Frame, MaxFrames: vm.MaxFrames, MaxBytes: vm.MaxBytes, MaxKeyLen: vm.MaxKeyLen}
	for _, t := range vm.KeyTypes {
		m.KeyTypes = append(m.KeyTypes, byte(t))
	}
	switch {
	case vm.JSONPath != "":
		if m.Key, err = NewJSONField(vm.JSONPath, m.frame().HeaderLength); err != nil {
			tb.Fatalf("%s: %v", v.Name, err)
		}
	case len(vm.ByteRange) == 2:
		if m.Key, err = NewByteRange(vm.ByteRange[0], vm.ByteRange[1]); err != nil {
			tb.Fatalf("%s: %v", v.Name, err)
		}
	case vm.ByteRange != nil:
		tb.Fatalf("%s: byteRange wants [offset, length]", v.Name)
	}
	return m, in
}

func TestVectors(t *testing.T) {
	vs := loadVectors(t)
	if len(vs) == 0 {
		t.Fatal("no vectors")
	}
	for _, v := range vs {
		t.Run(v.Name, func(t *testing.T) {
			m, in := v.build(t)
			key, err := m.Find(in)
			if Reason(err) != v.Reason || string(key) != v.Key {
				t.Fatalf("Find(%s) = %q, %v (%s); want %q, %s", v.Input, key, err, Reason(err), v.Key, v.Reason)
			}
			checkPrefixes(t, m, in)
		})
	}
}
