package main

import (
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/devgate/devgate/pkg/admin"
	"github.com/devgate/devgate/pkg/config"
	"github.com/devgate/devgate/pkg/proxy"
	"github.com/devgate/devgate/pkg/registry"
)

// adminFleet is what the admin service answers from: etcd's view, or with
// a static backend list the list and this gateway alone (no client, so
// drains and rebalance answer FailedPrecondition).
type adminFleet struct {
	id     string
	fleet  admin.Fleet
	client *clientv3.Client
	keys   registry.Keys
}

func newAdminFleet(cfg *config.Config, src proxy.RingSource, m *membership) adminFleet {
	if m != nil {
		return adminFleet{id: m.id, fleet: m.watcher, client: m.client, keys: m.keys}
	}
	self := registry.Gateway{ID: gatewayID(cfg), GatewayValue: registry.GatewayValue{
		Admin: cfg.Admin.AdvertiseAddr(), Version: version, Started: time.Now().UTC()}}
	return adminFleet{id: self.ID, fleet: admin.NewStaticFleet(src.Ring(), self)}
}
