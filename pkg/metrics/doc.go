// Package metrics exposes devgate's counters to Prometheus. It owns no
// counters of its own except the preread histogram: its collectors read a
// proxy's Stats and Conns and a watcher's WatcherStats and Snapshot at
// scrape time, so the hot path pays nothing for them.
//
//	reg := prometheus.NewRegistry()
//	reg.MustRegister(metrics.NewProxyCollector(p), metrics.NewRegistryCollector(w))
//	hist := metrics.NewPrereadHistogram()
//	reg.MustRegister(hist)
//	p.OnPreread = metrics.ObserveSeconds(hist)
//	pause := metrics.NewRehomePauseHistogram()
//	reg.MustRegister(pause)
//	p.OnMove = metrics.ObserveMove(pause)
//
// # Metrics
//
// From the proxy (NewProxyCollector):
//
//	devgate_connections_accepted_total        counter  connections accepted (refused ones included)
//	devgate_connections_active                gauge    connections open now (prereading or proxied)
//	devgate_connections_proxied               gauge    connections open now and routed to a backend
//	devgate_backend_connections{backend}      gauge    proxied connections per backend id
//	devgate_connections_closed_total{reason}  counter  connections ended or refused, by reason
//	devgate_routed_total                      counter  connections routed to a backend
//	devgate_fallbacks_total                   counter  routed to a backend other than the owner
//	devgate_dial_failures_total               counter  failed backend dials, each try counted
//	devgate_device_moved_total                counter  devices that reconnected to another backend than last time
//	devgate_bytes_total{direction}            counter  bytes proxied: "in" client to backend (the preread
//	                                                   login frame too), "out" back; counted as they are
//	                                                   copied, so it moves while connections are open
//	devgate_build_info{version,goversion,revision} gauge  always 1: the build that runs
//	devgate_evictions_total{cause}            counter  proxied connections closed by an operator action
//	devgate_relogin_replaced_total            counter  a device's older connection closed when it logged in again
//	devgate_rehome_total{cause,result}        counter  moves of live devices ended: cause drain, rebalance,
//	                                                   backend_lost; result moved, evicted_<reason>, device_gone
//	devgate_rehome_in_progress                gauge    moves of live devices in progress
//	devgate_source_ports_in_use{source,backend} gauge  local ports held by proxied connections per
//	                                                   dial.sourceAddrs address and backend id
//
// From the proxy's guards (NewGuardCollector; see its comment):
// devgate_backend_ejections_total{backend}, devgate_backend_ejected{backend},
// devgate_backend_eject_skips_total, devgate_flap_held_total,
// devgate_flap_holding, devgate_flap_refused_total,
// devgate_evict_notices_total{result} and, from the access log,
// devgate_access_lines_suppressed_total{reason}.
//
// Reasons of devgate_connections_closed_total are the proxy's Reason*
// constants (max_conns, shutdown, empty, client_gone, preread_timeout,
// read_error, no_backends, dial_failed, no_source_port, backend_write, client_closed,
// backend_closed, replaced, kicked (ctl kick), evicted_<cause>) and, for bad input, the frame
// package's labels (bad_header, too_large, no_key, key_too_long, not_json,
// too_many_frames, preread_cap, bad_key, dup_key). These and the evicted_<cause> of
// EvictionCauses are exported as 0 before they first happen, so rate() and
// alerts see them; any other reason the proxy records shows up too.
//
// devgate_evictions_total is a view of the same counts: reason
// "evicted_<cause>" gives cause <cause> ("drain", "rebalance",
// "gateway_drain", "shutdown", ...) and a bare "evicted" gives "other". A
// hard cut when Shutdown's context expires counts as reason "shutdown",
// not as an eviction.
//
// Every cause and result of devgate_rehome_total (proxy.MoveCauses x
// proxy.MoveResults) is exported as 0 before it first happens. A move that
// falls back to an eviction is also an eviction: it counts in
// devgate_evictions_total{cause} and devgate_connections_closed_total too.
//
// devgate_relogin_replaced_total is reason "replaced": a device logged in
// again through this replica while its older connection was still open
// there, and the older one was closed so the backend does not hold two
// sessions (DESIGN.md). Devices do this after a half-open mobile
// connection, and a device that closes and reconnects at once can beat
// its own close to the gateway, so a healthy fleet shows a steady trickle;
// a jump means devices abandon connections the gateway still holds.
// Earlier versions counted it as devgate_evictions_total{cause="replaced"}.
//
// From the admin gRPC server (NewGRPCServerMetrics, go-grpc-middleware's
// Prometheus provider): grpc_server_started_total,
// grpc_server_handled_total{grpc_code}, grpc_server_msg_received_total,
// grpc_server_msg_sent_total, grpc_server_handling_seconds, each by
// grpc_type, grpc_service and grpc_method.
//
// From the registry watcher (NewRegistryCollector):
//
//	devgate_ring_revision                 gauge    etcd revision of the snapshot routed on (0: none yet)
//	devgate_ring_backends{state}          gauge    backends of the snapshot by state: active, draining, held;
//	                                               active + held are in the ring
//	devgate_etcd_connected                gauge    1 while the watch is open and etcd answers
//	devgate_etcd_staleness_seconds        gauge    time since etcd last answered (0 before the first answer)
//	devgate_registry_relists_total        counter  full lists (start, compaction, restore, broken watch)
//	devgate_registry_bad_values_total     counter  keys in etcd rejected as untrusted input
//	devgate_registry_builds_total         counter  snapshots built
//	devgate_panic_holds_total             counter  times the panic threshold held departed backends
//	devgate_panic_hold_extended_total     counter  times a hold went on past panicHold: etcd could not
//	                                               confirm, or nothing routable would be left
//	devgate_registry_relist_reasons_total{reason}
//	                                      counter  full lists by why: start, compacted, regression,
//	                                               reconnect, silent, ended, error
//	devgate_registry_regressions_total    counter  lists that found etcd's revision or cluster gone back
//	devgate_registry_relist_repairs_total counter  lists that found changes the watch had not delivered
//	devgate_drain_deadline_timestamp_seconds{backend}
//	                                      gauge    Unix time of the deadline of each backend's drain
//
// Fed by the proxy through Proxy.OnPreread (NewPrereadHistogram):
//
//	devgate_preread_seconds               histogram  time a client took to send its key frame (or fail to);
//	                                                 buckets 100us .. 10s
//
// From the proxy's login pacing (NewAdmissionCollector; only backends that
// have a pace; refusals are devgate_connections_closed_total{reason="admission_timeout"}):
//
//	devgate_admission_waiting{backend}        gauge    connections waiting here for the backend's turn
//	devgate_admission_admitted_total{backend} counter  connections let through to dial the backend
//	devgate_admission_rate{backend}           gauge    this replica's share of the pace now, per second
//	                                                   (slow start included)
//
// Fed by the proxy through Proxy.OnAdmissionWait (NewAdmissionWaitHistogram):
//
//	devgate_admission_wait_seconds        histogram  time a connection waited for its backend's turn;
//	                                                 buckets 10ms .. 60s
//
// Fed by the proxy through Proxy.OnMove (NewRehomePauseHistogram):
//
//	devgate_rehome_pause_seconds{cause}   histogram  pause of each device that moved to its new backend;
//	                                                 buckets 1ms .. 10s
package metrics
