package main

import (
	"testing"
	"testing/fstest"
)

func TestMemoryLimit(t *testing.T) {
	const gi = 1 << 30
	file := func(s string) *fstest.MapFile { return &fstest.MapFile{Data: []byte(s)} }
	cases := []struct {
		name  string
		env   string
		files fstest.MapFS
		want  int64 // 0: none set
	}{
		{"v2 in a container (cgroup namespace)", "", fstest.MapFS{
			"proc/self/cgroup":         file("0::/\n"),
			"sys/fs/cgroup/memory.max": file("2147483648\n"),
		}, 2 * gi / 100 * 90},
		{"v2 on a host: the process's own cgroup", "", fstest.MapFS{
			"proc/self/cgroup":                          file("0::/kubepods/pod1/c1\n"),
			"sys/fs/cgroup/kubepods/pod1/c1/memory.max": file("1073741824\n"),
		}, gi / 100 * 90},
		{"v2 unlimited", "", fstest.MapFS{
			"proc/self/cgroup":         file("0::/\n"),
			"sys/fs/cgroup/memory.max": file("max\n"),
		}, 0},
		{"v1, own path not visible: the mount root", "", fstest.MapFS{
			"proc/self/cgroup":                           file("12:pids:/docker/abc\n4:memory:/docker/abc\n0::/\n"),
			"sys/fs/cgroup/memory/memory.limit_in_bytes": file("536870912\n"),
		}, 512 << 20 / 100 * 90},
		{"v1 with joined controllers", "", fstest.MapFS{
			"proc/self/cgroup": file("5:cpuacct,memory:/x\n"),
			"sys/fs/cgroup/memory/x/memory.limit_in_bytes": file("1000000000\n"),
		}, 900000000},
		{"v1 unlimited", "", fstest.MapFS{
			"proc/self/cgroup":                           file("4:memory:/\n"),
			"sys/fs/cgroup/memory/memory.limit_in_bytes": file("9223372036854771712\n"),
		}, 0},
		{"GOMEMLIMIT set wins", "1GiB", fstest.MapFS{
			"proc/self/cgroup":         file("0::/\n"),
			"sys/fs/cgroup/memory.max": file("2147483648\n"),
		}, 0},
		{"no cgroup files", "", fstest.MapFS{}, 0},
		{"garbage", "", fstest.MapFS{
			"proc/self/cgroup":         file("0::/\n"),
			"sys/fs/cgroup/memory.max": file("lots\n"),
		}, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := memoryLimit(tc.env, tc.files)
			if ok != (tc.want != 0) || got != tc.want {
				t.Fatalf("memoryLimit = %d, %v; want %d", got, ok, tc.want)
			}
		})
	}
}
