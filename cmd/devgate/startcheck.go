package main

import (
	"errors"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"

	"go.uber.org/zap"

	"github.com/devgate/devgate/pkg/config"
	"github.com/devgate/devgate/pkg/proxy"
	"github.com/devgate/devgate/pkg/ring"
)

// Startup checks (docs/capacity.md): a replica sized for many devices
// fails in two quiet ways long before memory runs out, so both are said at
// start. The file limit: each proxied connection holds two descriptors.
// The ephemeral ports: every backend dial takes a port of
// ip_local_port_range per (source address, backend address) pair, and
// dials fail with EADDRNOTAVAIL once the range is used up.

// portRangeFile is where Linux keeps the ephemeral port range (per
// network namespace).
const portRangeFile = "/proc/sys/net/ipv4/ip_local_port_range"

// errFileLimit refuses the start under limits.strictFiles.
var errFileLimit = errors.New("file limit cannot hold limits.maxConnections")

// startupChecks raises the file limit and compares it and the ephemeral
// port range with what the config asks for, on the ring known at start. An
// error only under limits.strictFiles.
func startupChecks(cfg *config.Config, p *proxy.Proxy, r ring.Ring, log *zap.Logger) error {
	soft, hard, err := raiseNofile()
	if err != nil {
		log.Warn("could not raise the file limit to its hard limit", zap.Error(err))
	}
	if err := checkNofile(p.FilesWanted(), p.ConnsWanted(), soft, hard, cfg.Limits.StrictFiles, log); err != nil {
		return err
	}
	checkPorts(portRangeFile, p.ConnsWanted(), busiestAddr(r), len(p.SourceAddrs), log)
	return nil
}

// busiestAddr is the share of the connections that the busiest backend
// address takes: its backend's share of the ring over the backend's ports
// (addrs), which its connections spread over (0: no backends).
func busiestAddr(r ring.Ring) float64 {
	var most float64
	bs := r.Backends()
	for i, s := range r.Shares() {
		most = max(most, s/float64(max(1, len(bs[i].Addrs))))
	}
	return most
}

// checkNofile compares the file limit (soft, raised to hard; 0: unknown)
// with want, the files maxConns connections and the reserve take.
func checkNofile(want uint64, maxConns int64, soft, hard uint64, strict bool, log *zap.Logger) error {
	if want == 0 || soft == 0 || soft >= want {
		log.Info("file limit", zap.Uint64("nofile", soft), zap.Uint64("hard", hard), zap.Uint64("wanted", want))
		return nil
	}
	msg := fmt.Sprintf("file limit (RLIMIT_NOFILE) %d, hard %d, is below the %d that limits.maxConnections %d needs "+
		"(2 descriptors a connection, 6 with goroutines, plus limits.fdReserve); raise it (ulimit -n, systemd LimitNOFILE=, "+
		"the container runtime's nofile) or lower limits.maxConnections", soft, hard, want, maxConns)
	if strict {
		return fmt.Errorf("%w: %s (limits.strictFiles is on)", errFileLimit, msg)
	}
	log.Warn(msg+"; connections will be capped to fit", zap.Uint64("nofile", soft), zap.Uint64("hard", hard),
		zap.Uint64("wanted", want), zap.Int64("maxConnections", maxConns))
	return nil
}

// checkPorts warns when the ephemeral port range read from path is smaller
// than the connections expected per backend address and source address:
// the busiest address's share of maxConns, spread over sources.
func checkPorts(path string, maxConns int64, busiest float64, sources int, log *zap.Logger) {
	lo, hi, err := readPortRange(path)
	if err != nil {
		log.Debug("ephemeral port range not checked", zap.Error(err))
		return
	}
	ports := int64(hi - lo + 1)
	if maxConns < 0 || busiest <= 0 {
		log.Info("ephemeral port range", zap.Int("from", lo), zap.Int("to", hi), zap.Int64("ports", ports),
			zap.Float64("busiestBackendShare", busiest), zap.Int64("maxConnections", maxConns))
		return
	}
	sources = max(sources, 1)
	per := int64(math.Ceil(float64(maxConns) * min(busiest, 1) / float64(sources)))
	if per <= ports {
		log.Info("ephemeral port range", zap.Int("from", lo), zap.Int("to", hi), zap.Int64("ports", ports),
			zap.Int64("connectionsPerBackendAndSource", per))
		return
	}
	log.Warn(fmt.Sprintf("ephemeral port range %d-%d (%d ports) is smaller than the %d connections expected on the busiest "+
		"backend address from one source address (limits.maxConnections %d x its %.1f%% share of the ring / %d source "+
		"addresses): dials to it fail with EADDRNOTAVAIL past the range; widen net.ipv4.ip_local_port_range, or add "+
		"backends, backend ports or source addresses", lo, hi, ports, per, maxConns, 100*busiest, sources),
		zap.Int64("ports", ports), zap.Int64("connectionsPerBackendAndSource", per))
}

// readPortRange reads "lo\thi" from an ip_local_port_range file.
func readPortRange(path string) (lo, hi int, err error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, 0, err
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 0, 0, fmt.Errorf("%s: want two numbers, got %q", path, strings.TrimSpace(string(b)))
	}
	if lo, err = strconv.Atoi(f[0]); err == nil {
		hi, err = strconv.Atoi(f[1])
	}
	if err != nil || lo < 1 || hi < lo || hi > 65535 {
		return 0, 0, fmt.Errorf("%s: bad range %q", path, strings.TrimSpace(string(b)))
	}
	return lo, hi, nil
}
