// Command devgate is the device gateway: one binary with subcommands.
//
//	devgate dev                      all-in-one: demo backends + gateway on 127.0.0.1:9000
//	devgate serve --config FILE      the gateway
//	devgate sim --target ADDR        simulated devices; prints where they landed
//	devgate backend --id ID          a demo backend (stands in for a Netty server)
//	devgate version
package main

import (
	"fmt"
	"os"
)

// version and revision are stamped at build time:
// -ldflags "-X main.version=v1.2.3 -X main.revision=$(git rev-parse HEAD)".
// An empty revision falls back to the VCS stamp of the build.
var version, revision = "dev", ""

type command struct {
	name, summary string
	run           func(args []string) error
}

func commands() []command {
	return []command{
		{"dev", "run demo backends and a gateway locally (devices on 127.0.0.1:9000)", runDev},
		{"serve", "run the gateway from a config file", runServe},
		{"sim", "connect simulated devices and report where they landed", runSim},
		{"backend", "run one demo backend", runBackend},
		{"load", "load generator for benchmarks: hold, churn, pingpong, bulk (one JSON line)", runLoad},
		{"register", "register a backend in etcd while its port accepts connections", runRegister},
		{"ctl", "operate the fleet through the admin API (backends, drain, lookup, ...)", runCtl},
		{"version", "print the version", func([]string) error { fmt.Println(version); return nil }},
	}
}

func main() {
	if len(os.Args) < 2 {
		usage()
		os.Exit(2)
	}
	for _, c := range commands() {
		if c.name == os.Args[1] {
			if err := c.run(os.Args[2:]); err != nil {
				fmt.Fprintf(os.Stderr, "devgate %s: %v\n", c.name, err)
				os.Exit(1)
			}
			return
		}
	}
	if os.Args[1] != "help" && os.Args[1] != "-h" && os.Args[1] != "--help" {
		fmt.Fprintf(os.Stderr, "devgate: unknown command %q\n", os.Args[1])
	}
	usage()
	os.Exit(2)
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: devgate <command> [flags]\n\ncommands:")
	for _, c := range commands() {
		fmt.Fprintf(os.Stderr, "  %-9s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(os.Stderr, "\nrun 'devgate <command> -h' for a command's flags")
}
