package admin

import (
	"context"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	adminv1 "github.com/devgate/devgate/api/devgate/admin/v1"
)

// FindDevice answers with every live connection of a device in the fleet.
func (s *Service) FindDevice(context.Context, *adminv1.FindDeviceRequest) (*adminv1.FindDeviceResponse, error) {
	return nil, status.Error(codes.Unimplemented, "FindDevice: not yet")
}

// KickDevice closes every live connection of a device in the fleet.
func (s *Service) KickDevice(context.Context, *adminv1.KickDeviceRequest) (*adminv1.KickDeviceResponse, error) {
	return nil, status.Error(codes.Unimplemented, "KickDevice: not yet")
}

// ListConnections pages through the fleet's live connections.
func (s *Service) ListConnections(context.Context, *adminv1.ListConnectionsRequest) (*adminv1.ListConnectionsResponse, error) {
	return nil, status.Error(codes.Unimplemented, "ListConnections: not yet")
}

// LocalConnections lists this replica's live connections.
func (s *Service) LocalConnections(context.Context, *adminv1.LocalConnectionsRequest) (*adminv1.LocalConnectionsResponse, error) {
	return nil, status.Error(codes.Unimplemented, "LocalConnections: not yet")
}

// LocalKick closes a device's live connections on this replica.
func (s *Service) LocalKick(context.Context, *adminv1.KickDeviceRequest) (*adminv1.KickDeviceResponse, error) {
	return nil, status.Error(codes.Unimplemented, "LocalKick: not yet")
}
