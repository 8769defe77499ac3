package ring

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"testing"

	"github.com/cespare/xxhash/v2"

	"github.com/devgate/devgate/internal/testenv"
)

var innermost = regexp.MustCompile(`\{[^{}]*\}`)

var update = flag.Bool("update", false, "regenerate testdata/vectors.json")

const vectorsFile = "testdata/vectors.json"

// vectors is the schema of testdata/vectors.json and of reference.py's
// output. uint64 values are hex strings: JSON numbers lose bits in many
// languages.
type vectors struct {
	About      string     `json:"about"`
	BucketBits int        `json:"bucket_bits"`
	FracBits   int        `json:"frac_bits"`
	Primitives primitives `json:"primitives"`
	Sets       []vecSet   `json:"sets"`
}

type primitives struct {
	XXHash64 []vecHash `json:"xxhash64"`
	Draw     []vecDraw `json:"draw"`
	NegLog2  []vecLog  `json:"neg_log2"`
}

type vecHash struct {
	In  string `json:"in"`
	Out string `json:"out"`
}

type vecDraw struct {
	Bucket uint64 `json:"bucket"`
	Seed   string `json:"seed"`
	Out    string `json:"out"`
}

type vecLog struct {
	U   string `json:"u"`
	Out string `json:"out"`
}

type vecSet struct {
	Name     string       `json:"name"`
	Mode     Mode         `json:"mode"`
	Backends []vecBackend `json:"backends"`
	Cases    []vecCase    `json:"cases"`
}

type vecBackend struct {
	ID     string `json:"id"`
	Weight uint32 `json:"weight"`
}

type vecCase struct {
	Key    string   `json:"key"`
	Bucket *uint64  `json:"bucket,omitempty"` // consistent mode only
	Owner  string   `json:"owner"`
	Owners []string `json:"owners"` // the whole fallback order
}

func hex64(v uint64) string { return fmt.Sprintf("%016x", v) }

// compute fills every expected value of v from its inputs with this package.
func compute(t *testing.T, v *vectors) {
	v.BucketBits, v.FracBits = bucketBits, fracBits
	p := &v.Primitives
	for i := range p.XXHash64 {
		p.XXHash64[i].Out = hex64(xxhash.Sum64String(p.XXHash64[i].In))
	}
	for i := range p.Draw {
		p.Draw[i].Out = hex64(draw(p.Draw[i].Bucket, parseHex(t, p.Draw[i].Seed)))
	}
	for i := range p.NegLog2 {
		p.NegLog2[i].Out = hex64(negLog2(parseHex(t, p.NegLog2[i].U)))
	}
	for si := range v.Sets {
		s := &v.Sets[si]
		bs := make([]Backend, len(s.Backends))
		for i, b := range s.Backends {
			bs[i] = Backend{ID: b.ID, Weight: b.Weight}
		}
		r := mustNew(t, s.Mode, bs)
		for ci := range s.Cases {
			c := &s.Cases[ci]
			c.Bucket, c.Owners = nil, nil
			if s.Mode == ModeConsistent {
				b := xxhash.Sum64String(c.Key) >> (64 - bucketBits)
				c.Bucket = &b
			}
			for _, i := range r.Owners([]byte(c.Key), r.Len(), nil) {
				c.Owners = append(c.Owners, r.Backends()[i].ID)
			}
			c.Owner = r.Backends()[r.Lookup([]byte(c.Key))].ID
		}
	}
}

func parseHex(t *testing.T, s string) uint64 {
	v, err := strconv.ParseUint(s, 16, 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func loadVectors(t *testing.T, data []byte) *vectors {
	var v vectors
	if err := json.Unmarshal(data, &v); err != nil {
		t.Fatal(err)
	}
	return &v
}

// TestVectors checks testdata/vectors.json; with -update it rewrites it.
func TestVectors(t *testing.T) {
	if *update {
		v := vectorInputs()
		compute(t, v)
		data, err := json.MarshalIndent(v, "", " ")
		if err != nil {
			t.Fatal(err)
		}
		// One line per innermost object (case, backend, primitive) keeps
		// the file short enough to read.
		data = innermost.ReplaceAllFunc(data, func(obj []byte) []byte {
			var b bytes.Buffer
			_ = json.Compact(&b, obj)
			return b.Bytes()
		})
		if err := os.WriteFile(vectorsFile, append(data, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	data, err := os.ReadFile(vectorsFile)
	if err != nil {
		t.Fatal(err)
	}
	want := loadVectors(t, data)
	got := loadVectors(t, data)
	compute(t, got)
	diffVectors(t, "vectors.json", "Go", want, got)
}

// TestReferencePython runs the independent Python implementation on the
// vector inputs and compares its answers with this package's, key by key.
func TestReferencePython(t *testing.T) {
	t.Parallel()
	py, err := exec.LookPath("python3")
	if err != nil {
		testenv.Missing(t, "python3 not found: cannot run testdata/reference.py (apt-get install -y python3)")
	}
	var stderr bytes.Buffer
	cmd := exec.Command(py, filepath.Join("testdata", "reference.py"))
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("reference.py: %v\n%s", err, stderr.String())
	}
	fromPy := loadVectors(t, out)
	fromGo := loadVectors(t, out)
	compute(t, fromGo)
	diffVectors(t, "reference.py", "Go", fromPy, fromGo)
	n := 0
	for _, s := range fromPy.Sets {
		n += len(s.Cases)
	}
	t.Logf("reference.py agrees with Go on %d keys in %d backend sets", n, len(fromPy.Sets))
	if n < 300 {
		t.Errorf("only %d keys compared", n)
	}
}

func diffVectors(t *testing.T, wantName, gotName string, want, got *vectors) {
	t.Helper()
	if !reflect.DeepEqual(want.Primitives, got.Primitives) || want.BucketBits != got.BucketBits || want.FracBits != got.FracBits {
		t.Errorf("%s and %s disagree on primitives or constants", wantName, gotName)
	}
	if len(want.Sets) != len(got.Sets) {
		t.Fatalf("%d sets vs %d", len(want.Sets), len(got.Sets))
	}
	for si, ws := range want.Sets {
		for ci, wc := range ws.Cases {
			if gc := got.Sets[si].Cases[ci]; !reflect.DeepEqual(wc, gc) {
				t.Errorf("set %s key %q: %s says %s %v, %s says %s %v",
					ws.Name, wc.Key, wantName, wc.Owner, wc.Owners, gotName, gc.Owner, gc.Owners)
			}
		}
	}
}

// vectorInputs is the input half of vectors.json: backend sets and keys
// chosen to cover ID byte order, extreme weights, long keys (xxhash's
// 32-byte stripes) and non-ASCII bytes.
func vectorInputs() *vectors {
	v := &vectors{About: "pkg/ring placement vectors: see doc.go for the rule and reference.py for a second implementation. " +
		"Regenerate with: go test ./pkg/ring -run TestVectors -update"}
	for _, s := range []string{"", "a", "abc", "123456789", "dev-0123456789abcdef", "a 32+ byte key: exercises the 4-lane stripe loop"} {
		v.Primitives.XXHash64 = append(v.Primitives.XXHash64, vecHash{In: s})
	}
	for _, b := range []uint64{0, 1, 12345, numBuckets - 1} {
		v.Primitives.Draw = append(v.Primitives.Draw, vecDraw{Bucket: b, Seed: hex64(xxhash.Sum64String("netty-00"))})
	}
	for _, u := range []uint64{0, 1, 2, 3, 1 << 32, 1<<63 - 1, 1 << 63, 0xc000000000000000, 0xdeadbeefcafef00d, 1<<64 - 1} {
		v.Primitives.NegLog2 = append(v.Primitives.NegLog2, vecLog{U: hex64(u)})
	}
	var ten []vecBackend
	for i := range 10 {
		ten = append(ten, vecBackend{ID: fmt.Sprintf("netty-%02d", i), Weight: 100})
	}
	weighted := []vecBackend{ // deliberately unsorted; sorted by ID bytes: "10...", "A", "Zulu", "a", "b/x", ...
		{"netty-big", 250}, {"a", 50}, {"Zulu", 3}, {"10.0.0.7:9000", 1}, {"~last", 100},
		{"A", 2}, {"b/x", 100}, {"max", 10000}, {"default", 0},
	}
	crc := []vecBackend{{"nginx-c", 100}, {"nginx-a", 100}, {"nginx-b", 100}}
	sets := []struct {
		name  string
		mode  Mode
		bs    []vecBackend
		nkeys int
	}{
		{"ten-equal", ModeConsistent, ten, 120},
		{"weighted", ModeConsistent, weighted, 160},
		{"single", ModeConsistent, []vecBackend{{"only", 7}}, 8},
		{"crc32-mod", ModeCRC32Mod, crc, 60},
	}
	rng := rand.New(rand.NewPCG(9, 10))
	for _, s := range sets {
		vs := vecSet{Name: s.name, Mode: s.mode, Backends: s.bs}
		keys := []string{"", "123456789", "设备-42", "imei:356938035643809", "urn:uuid:6ba7b810-9dad-11d1-80b4-00c04fd430c8/long-suffix"}
		for len(keys) < s.nkeys {
			switch len(keys) % 3 {
			case 0:
				keys = append(keys, fmt.Sprintf("%015d", rng.Uint64N(1e15)))
			case 1:
				keys = append(keys, fmt.Sprintf("dev-%x", rng.Uint64()))
			default:
				keys = append(keys, fmt.Sprintf("%x-%x-%x", rng.Uint32(), rng.Uint64(), rng.Uint64()))
			}
		}
		for _, k := range keys[:s.nkeys] {
			vs.Cases = append(vs.Cases, vecCase{Key: k})
		}
		v.Sets = append(v.Sets, vs)
	}
	return v
}
