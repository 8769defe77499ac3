//go:build !linux

package proxy

import (
	"errors"
	"net"
	"time"
)

// errEventLoopUnsupported: the event loops need epoll.
var errEventLoopUnsupported = errors.New("event loops are supported on Linux only")

type evLoops struct{}

func (*evLoops) stop() {}

func (*evLoops) refuseUnrouted() {}

func (*evLoops) bytes() (in, out uint64) { return 0, 0 }

func (p *Proxy) evAccept(net.Conn, bool) bool { return false }

// listenSockOpts: nil where accepted sockets are not known to inherit them.
var listenSockOpts func(fd int, keepAlive time.Duration) error

func (p *Proxy) evServe(*net.TCPListener, bool, <-chan struct{}) (error, bool) { return nil, false }

type evPair struct{}

func (*evPair) kill() {}

func (*evPair) onLoop() bool { return false }

func (*evPair) postMove(*move) {}

func (p *Proxy) useEventLoop(client, backend net.Conn) bool { return false }

func (p *Proxy) loopsCopy() bool { return false }

func (p *Proxy) newEvPair(*conn, func()) (*evPair, error) { return nil, errEventLoopUnsupported }

func (p *Proxy) handOff(*evPair) {}

func (*evPair) written() (in, out uint64) { return 0, 0 }
