package loadgen

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/devgate/devgate/pkg/sim"
)

// device is one connection and its frame buffers.
type device struct {
	c   net.Conn
	out []byte // frame being sent
	in  []byte // frame being received
}

// connect dials device i, logs in and awaits the reply.
func connect(ctx context.Context, cfg *Config, i int) (*device, error) {
	c, err := cfg.dialer(i).DialContext(ctx, "tcp", cfg.target(i))
	if err != nil {
		return nil, err
	}
	d := &device{c: c, in: make([]byte, 0, 256)}
	body := fmt.Appendf(nil, `{"devid":%q,"token":"bench","os":"linux","ver":"1.0.0"}`, cfg.deviceID(i))
	d.out = sim.AppendFrame(d.out[:0], sim.TypeLogin, 1, 0, body)
	if err := d.exchange(cfg.Timeout); err != nil {
		c.Close()
		return nil, fmt.Errorf("login: %w", err)
	}
	return d, nil
}

// exchange writes d.out and reads one frame back into d.in, within timeout.
func (d *device) exchange(timeout time.Duration) error {
	d.c.SetDeadline(time.Now().Add(timeout))
	if _, err := d.c.Write(d.out); err != nil {
		return err
	}
	return d.readFrame()
}

// readFrame reads one whole frame into d.in.
func (d *device) readFrame() error {
	if cap(d.in) < sim.HeaderLen {
		d.in = make([]byte, sim.HeaderLen, 256)
	}
	hdr := d.in[:sim.HeaderLen]
	if _, err := io.ReadFull(d.c, hdr); err != nil {
		return err
	}
	n := sim.HeaderLen + int(binary.BigEndian.Uint16(hdr[4:6]))
	if cap(d.in) < n {
		nb := make([]byte, n)
		copy(nb, hdr)
		d.in = nb
	}
	d.in = d.in[:n]
	if _, err := io.ReadFull(d.c, d.in[sim.HeaderLen:]); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return err
	}
	return nil
}

// heartbeat sends a small type-2 frame and awaits its echo.
func (d *device) heartbeat(timeout time.Duration, seq uint16) error {
	d.out = sim.AppendFrame(d.out[:0], sim.TypeHeartbeat, 1, seq, []byte(`{"hb":1}`))
	if err := d.exchange(timeout); err != nil {
		return fmt.Errorf("heartbeat: %w", err)
	}
	return nil
}
