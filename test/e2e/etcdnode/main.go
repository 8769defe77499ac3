// Command etcdnode runs one member of an etcd cluster (go.etcd.io/etcd
// embed) as its own process, for the end-to-end tests: each member can then
// be killed, paused (SIGSTOP) and restarted on its own. It prints "ready"
// on stdout once the member serves clients and stops cleanly on SIGTERM.
//
//	etcdnode --name e1 --data-dir /tmp/e1 --client 127.0.0.1:2379 --peer 127.0.0.1:2380 \
//	    --initial-cluster e1=http://127.0.0.1:2380,e2=http://127.0.0.1:2382,e3=http://127.0.0.1:2384
package main

import (
	"flag"
	"fmt"
	"net/url"
	"os"
	"os/signal"
	"syscall"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
)

func main() {
	name := flag.String("name", "e1", "member name")
	dir := flag.String("data-dir", "", "data directory (required)")
	client := flag.String("client", "127.0.0.1:2379", "client host:port")
	peer := flag.String("peer", "127.0.0.1:2380", "peer host:port")
	cluster := flag.String("initial-cluster", "", "name=http://peer,... (default: this member alone)")
	state := flag.String("initial-cluster-state", "new", "new or existing")
	tick := flag.Uint("tick-ms", 100, "heartbeat interval")
	election := flag.Uint("election-ms", 1000, "election timeout")
	progress := flag.Duration("progress-notify", 2*time.Second, "watch progress notify interval")
	level := flag.String("log-level", "error", "etcd log level")
	flag.Parse()
	if *dir == "" {
		fmt.Fprintln(os.Stderr, "etcdnode: --data-dir is required")
		os.Exit(2)
	}
	c := embed.NewConfig()
	c.Name, c.Dir, c.LogLevel = *name, *dir, *level
	cu := url.URL{Scheme: "http", Host: *client}
	pu := url.URL{Scheme: "http", Host: *peer}
	c.ListenClientUrls, c.AdvertiseClientUrls = []url.URL{cu}, []url.URL{cu}
	c.ListenPeerUrls, c.AdvertisePeerUrls = []url.URL{pu}, []url.URL{pu}
	c.InitialCluster = *cluster
	if c.InitialCluster == "" {
		c.InitialCluster = c.InitialClusterFromName(c.Name)
	}
	c.ClusterState = *state
	c.TickMs, c.ElectionMs = *tick, *election
	c.WatchProgressNotifyInterval = *progress
	e, err := embed.StartEtcd(c)
	if err != nil {
		fmt.Fprintln(os.Stderr, "etcdnode:", err)
		os.Exit(1)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	select {
	case <-e.Server.ReadyNotify():
		fmt.Println("ready", *name, cu.String())
	case err := <-e.Err():
		fmt.Fprintln(os.Stderr, "etcdnode:", err)
		os.Exit(1)
	case <-sig:
		e.Close()
		os.Exit(0)
	}
	select {
	case err := <-e.Err():
		fmt.Fprintln(os.Stderr, "etcdnode:", err)
		e.Close()
		os.Exit(1)
	case <-sig:
		e.Close()
	}
}
