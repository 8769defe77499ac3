package metrics

import (
	"runtime"
	"runtime/debug"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/prometheus/client_golang/prometheus"
)

// NewBuildInfo returns devgate_build_info{version,goversion,revision},
// always 1, so a dashboard can show which build each replica runs. An
// empty revision is taken from the VCS stamp of the build, else "unknown".
func NewBuildInfo(version, revision string) prometheus.Collector {
	if revision == "" {
		revision = vcsRevision()
	}
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace:   namespace,
		Name:        "build_info",
		Help:        "Always 1; the labels say which build of devgate runs.",
		ConstLabels: prometheus.Labels{"version": version, "goversion": runtime.Version(), "revision": revision},
	})
	g.Set(1)
	return g
}

func vcsRevision() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && s.Value != "" {
				return s.Value
			}
		}
	}
	return "unknown"
}

// grpcBuckets span an admin call: a local lookup (~1 ms) to a fleet-wide
// call waiting on slow peers (seconds).
var grpcBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

// NewGRPCServerMetrics returns the admin gRPC server's metrics, the
// go-grpc-middleware Prometheus provider's: grpc_server_started_total,
// grpc_server_handled_total{grpc_code}, grpc_server_msg_received_total,
// grpc_server_msg_sent_total and the grpc_server_handling_seconds
// histogram, each by grpc_type, grpc_service and grpc_method. Register it,
// put its interceptors first on the server (so calls refused by auth are
// counted too), and call InitializeMetrics once the services are
// registered, so every method shows at 0.
func NewGRPCServerMetrics() *grpcprom.ServerMetrics {
	return grpcprom.NewServerMetrics(grpcprom.WithServerHandlingTimeHistogram(grpcprom.WithHistogramBuckets(grpcBuckets)))
}
