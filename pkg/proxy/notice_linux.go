//go:build linux

package proxy

import (
	"github.com/devgate/devgate/pkg/proxy/internal/netpoll"
)

// maxNoticeDrain bounds the device bytes read and dropped before the close
// that follows a notice: a close with unread bytes resets the connection,
// and a reset throws away the notice still in the send queue.
const maxNoticeDrain = 64 << 10

// loopNotice writes the evict notice to pr's device if its end is an
// eviction and the device is at a frame boundary (notice.go).
func (l *evLoop) loopNotice(pr *evPair, reason Reason) {
	p := l.p
	if !p.EvictNotice.on() {
		return
	}
	pc := pr.pc
	if r := pc.endReason(); r != "" {
		reason = r // conn.close set it before the kill
	}
	if !noticeFor(reason) {
		return
	}
	lg := pc.lg
	if lg == nil || lg.broken || !lg.track[1].AtBoundary() || pr.pending[1] != nil || pr.ended[1] ||
		pr.mv != nil || pr.side[0].Fd < 0 {
		p.notices.skipped.Add(1)
		return
	}
	f := p.noticeFrame()
	if f == nil {
		p.notices.skipped.Add(1)
		return
	}
	rest, err := netpoll.WriteSome(pr.side[0].Fd, f)
	if err != nil || len(rest) == len(f) {
		p.notices.skipped.Add(1)
		return
	}
	// A part of it went out with a full send buffer: the close follows,
	// so the device sees a short last frame, never a split backend one.
	p.notices.sent.Add(1)
	for drained := 0; drained < maxNoticeDrain; {
		n, err := netpoll.Read(pr.side[0].Fd, l.buf)
		if n <= 0 || err != nil {
			break
		}
		drained += n
	}
}
