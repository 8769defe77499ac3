package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"runtime/debug"
	"strconv"
	"strings"
)

// memLimitPercent is the share of the container's memory limit that becomes
// the Go runtime's soft limit when GOMEMLIMIT is unset. The rest is headroom
// for memory the runtime does not count but the cgroup does: kernel socket
// buffers of every device connection, page cache, thread stacks. At 100% the
// GC would start working hard only when the OOM killer is already close.
const memLimitPercent = 90

// noLimit is where cgroup v1 values start meaning "unlimited" (the kernel
// reports 2^63-1 rounded down to a page).
const noLimit = 1 << 60

// init sets the soft memory limit before anything allocates much, as
// automemlimit does: GOMEMLIMIT, when set, wins; otherwise 90% of the
// cgroup's memory limit, if there is one. Errors leave the runtime's
// default (no limit): a gateway must not refuse to start over this.
func init() {
	if limit, ok := memoryLimit(os.Getenv("GOMEMLIMIT"), os.DirFS("/")); ok {
		debug.SetMemoryLimit(limit)
	}
}

// memoryLimit is the soft limit to set, and false when there is none to set
// (GOMEMLIMIT given, no cgroup limit, or it could not be read).
func memoryLimit(env string, root fs.FS) (int64, bool) {
	if env != "" {
		return 0, false // the runtime read it already
	}
	n, err := cgroupMemoryLimit(root)
	if err != nil || n <= 0 {
		return 0, false
	}
	return n / 100 * memLimitPercent, true
}

var errNoCgroupLimit = errors.New("no cgroup memory limit")

// cgroupMemoryLimit reads the memory limit of this process's cgroup, v2
// (memory.max) or v1 (memory.limit_in_bytes). It looks under the path
// /proc/self/cgroup names first, then at the mount's root, which is the
// container's own cgroup when the path is not visible from inside it.
func cgroupMemoryLimit(root fs.FS) (int64, error) {
	self, err := fs.ReadFile(root, "proc/self/cgroup")
	if err != nil {
		return 0, fmt.Errorf("cgroup: %w", err)
	}
	var candidates []string
	sc := bufio.NewScanner(bytes.NewReader(self))
	for sc.Scan() {
		// hierarchy-ID:controllers:path; v2 is "0::/path".
		f := strings.SplitN(sc.Text(), ":", 3)
		if len(f) != 3 {
			continue
		}
		switch {
		case f[0] == "0" && f[1] == "":
			candidates = append(candidates,
				path.Join("sys/fs/cgroup", f[2], "memory.max"), "sys/fs/cgroup/memory.max")
		case strings.Contains(","+f[1]+",", ",memory,"):
			candidates = append(candidates,
				path.Join("sys/fs/cgroup/memory", f[2], "memory.limit_in_bytes"), "sys/fs/cgroup/memory/memory.limit_in_bytes")
		}
	}
	for _, c := range candidates {
		b, err := fs.ReadFile(root, c)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("cgroup: %w", err)
		}
		s := strings.TrimSpace(string(b))
		if s == "max" {
			return 0, errNoCgroupLimit
		}
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("cgroup %s: %w", c, err)
		}
		if n >= noLimit {
			return 0, errNoCgroupLimit
		}
		return n, nil
	}
	return 0, errNoCgroupLimit
}
