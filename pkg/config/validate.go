package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"sync"

	"go.yaml.in/yaml/v3"
)

// ErrNoBackends is a config with neither a static backend list nor etcd:
// the gateway would accept devices and close every one.
var ErrNoBackends = errors.New("no backends and no etcd, so nothing to route to: " +
	"list backends (backends: [{id: b1, addr: 10.0.0.1:9000}]) or set etcd.endpoints, where backends register")

// AddrError is an address in the file that cannot be listened on or dialled;
// Key is its YAML path (admin.httpListen, backends[2].addr).
type AddrError struct {
	Key, Addr, Reason string
}

func (e *AddrError) Error() string { return fmt.Sprintf("%s: %q: %s", e.Key, e.Addr, e.Reason) }

// UnknownFieldError is a key the section does not have, with the closest
// one it has when there is one.
type UnknownFieldError struct {
	Line       int
	Section    string // YAML path of the mapping; "" at the top
	Field      string
	Suggestion string
}

func (e *UnknownFieldError) Error() string {
	s := fmt.Sprintf("line %d: unknown field %q", e.Line, e.Field)
	if e.Section != "" {
		s += " in " + e.Section
	}
	if e.Suggestion != "" {
		s += fmt.Sprintf(" (did you mean %q?)", e.Suggestion)
	}
	return s
}

// checkListen checks a listen address: host (may be empty) and a port 0..65535.
func checkListen(key, addr string) error { return checkHostPort(key, addr, false) }

// checkDial checks an address to connect to: a host and a port 1..65535.
func checkDial(key, addr string) error { return checkHostPort(key, addr, true) }

func checkHostPort(key, addr string, dial bool) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		reason := err.Error()
		var ae *net.AddrError
		if errors.As(err, &ae) {
			reason = strings.TrimSuffix(ae.Err, " in address")
		}
		return &AddrError{key, addr, reason}
	}
	if dial && host == "" {
		return &AddrError{key, addr, "missing host"}
	}
	n, err := strconv.ParseUint(port, 10, 32)
	switch {
	case port == "":
		return &AddrError{key, addr, "missing port"}
	case err != nil:
		return &AddrError{key, addr, fmt.Sprintf("port %q is not a number", port)}
	case n > 65535:
		return &AddrError{key, addr, fmt.Sprintf("port %d out of range 0..65535", n)}
	case dial && n == 0:
		return &AddrError{key, addr, "port 0 cannot be dialled"}
	}
	return nil
}

// checkEndpoint checks an etcd endpoint: http:// or https://, host and port.
func checkEndpoint(key, ep string) error {
	if !strings.HasPrefix(ep, "http://") && !strings.HasPrefix(ep, "https://") {
		return &AddrError{key, ep, "must start with http:// or https://"}
	}
	u, err := url.Parse(ep)
	if err != nil {
		return &AddrError{key, ep, err.Error()}
	}
	if u.Path != "" && u.Path != "/" || u.RawQuery != "" {
		return &AddrError{key, ep, "want scheme://host:port only"}
	}
	if err := checkDial(key, u.Host); err != nil {
		return &AddrError{key, ep, err.(*AddrError).Reason}
	}
	return nil
}

// unknownFieldRE is how yaml.v3 reports a key that no struct field takes.
var unknownFieldRE = regexp.MustCompile(`^line (\d+): field (.+) not found in type (\S+)$`)

// decodeError rewrites yaml's type errors: an unknown key names the section
// it is in and the key it is closest to, not a Go type.
func decodeError(err error) error {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return fmt.Errorf("parse: %w", err)
	}
	errs := make([]error, 0, len(te.Errors))
	for _, msg := range te.Errors {
		m := unknownFieldRE.FindStringSubmatch(msg)
		if m == nil {
			errs = append(errs, errors.New(msg))
			continue
		}
		sec, ok := sections()[m[3]]
		if !ok {
			errs = append(errs, errors.New(msg))
			continue
		}
		line, _ := strconv.Atoi(m[1])
		errs = append(errs, &UnknownFieldError{Line: line, Section: sec.path, Field: m[2], Suggestion: closest(m[2], sec.keys)})
	}
	return errors.Join(errs...)
}

// section is a YAML mapping of the file: its path and its keys.
type section struct {
	path string
	keys []string
}

// sections maps the Go type name yaml reports ("config.Admin") to the
// section of the file it decodes.
var sections = sync.OnceValue(func() map[string]section {
	out := map[string]section{}
	var walk func(t reflect.Type, path string)
	walk = func(t reflect.Type, path string) {
		for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice {
			if t.Kind() == reflect.Slice {
				path += "[]"
			}
			t = t.Elem()
		}
		if t.Kind() != reflect.Struct || t.PkgPath() != reflect.TypeFor[Config]().PkgPath() {
			return
		}
		if _, seen := out[t.String()]; seen {
			return
		}
		sec := section{path: path}
		var fields func(t reflect.Type)
		fields = func(t reflect.Type) {
			for i := range t.NumField() {
				key, opts, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
				if key == "" && opts == "inline" { // its keys are this section's
					fields(t.Field(i).Type)
					continue
				}
				if key == "" || key == "-" {
					continue
				}
				sec.keys = append(sec.keys, key)
				walk(t.Field(i).Type, strings.TrimPrefix(path+"."+key, "."))
			}
		}
		fields(t)
		out[t.String()] = sec
	}
	walk(reflect.TypeFor[Config](), "")
	return out
})

// closest is the key nearest to typo within an edit distance of a third of
// its length (at least 2), or "".
func closest(typo string, keys []string) string {
	best, bestD := "", max(2, len(typo)/3)+1
	for _, k := range keys {
		if d := editDistance(strings.ToLower(typo), strings.ToLower(k)); d < bestD {
			best, bestD = k, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance of a and b (bytes).
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// inFile prefixes each error with the file's name.
func inFile(path string, err error) error {
	all := []error{err}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		all = j.Unwrap()
	}
	errs := make([]error, len(all))
	for i, e := range all {
		errs[i] = fmt.Errorf("%s: %w", path, e)
	}
	if len(errs) == 1 {
		return errs[0]
	}
	return errors.Join(errs...)
}

// File is a file the config names: Key is its YAML path.
type File struct{ Key, Path string }

// Files lists the files the config names (certificates, keys, tokens, the
// etcd password), for `config check` to open before serve needs them.
func (c *Config) Files() []File {
	var out []File
	add := func(key, path string) {
		if path != "" {
			out = append(out, File{key, path})
		}
	}
	if c.TLS != nil {
		add("tls.certFile", c.TLS.CertFile)
		add("tls.keyFile", c.TLS.KeyFile)
	}
	if b := c.BackendTLS; b != nil {
		add("backendTLS.caFile", b.CAFile)
		add("backendTLS.certFile", b.CertFile)
		add("backendTLS.keyFile", b.KeyFile)
	}
	if e := c.Etcd; e != nil {
		add("etcd.caFile", e.CAFile)
		add("etcd.certFile", e.CertFile)
		add("etcd.keyFile", e.KeyFile)
		add("etcd.passwordFile", e.PasswordFile)
	}
	a := c.Admin
	add("admin.certFile", a.CertFile)
	add("admin.keyFile", a.KeyFile)
	add("admin.clientCAFile", a.ClientCAFile)
	for i, t := range a.Tokens {
		add(fmt.Sprintf("admin.tokens[%d].file", i), t.File)
	}
	return out
}
