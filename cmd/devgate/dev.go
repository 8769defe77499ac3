package main

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"github.com/devgate/devgate/pkg/config"
	"github.com/devgate/devgate/pkg/demo"
	"github.com/devgate/devgate/pkg/proxy"
)

func runDev(args []string) error {
	fs := flag.NewFlagSet("dev", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:9000", "device listener of the gateway")
	n := fs.Int("backends", 3, "demo backends to start")
	grace := fs.Duration("grace", 5*time.Second, "shutdown grace period")
	level := fs.String("log-level", "info", "debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *n < 1 || *n > 64 {
		return errors.New("--backends: want 1..64")
	}
	if host, _, err := net.SplitHostPort(*listen); err != nil || !net.ParseIP(host).IsLoopback() {
		return fmt.Errorf("--listen %q: dev mode stays on a loopback address", *listen)
	}
	log, err := newLogger(*level, "console")
	if err != nil {
		return err
	}
	defer log.Sync()

	// Demo backends on ephemeral loopback ports, registered like static ones.
	cfg := &config.Config{Listen: *listen}
	var backends []*demo.Backend
	var wg sync.WaitGroup
	defer func() {
		for _, b := range backends {
			b.Close()
		}
		wg.Wait()
	}()
	for i := 1; i <= *n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		b := &demo.Backend{ID: fmt.Sprintf("demo-%d", i), Logger: log.Named("backend")}
		backends = append(backends, b)
		wg.Add(1)
		go func() { defer wg.Done(); b.Serve(l) }()
		cfg.Backends = append(cfg.Backends, config.Backend{ID: b.ID, Addr: l.Addr().String()})
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	r, err := cfg.BuildRing()
	if err != nil {
		return err
	}
	p, err := newProxy(cfg, proxy.NewAtomicRing(r), log.Named("gateway"))
	if err != nil {
		return err
	}
	l, err := net.Listen("tcp", cfg.ListenAddr())
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stdout, "devgate dev %s\n  gateway   %s (devices connect here)\n", version, l.Addr())
	for _, b := range cfg.Backends {
		fmt.Fprintf(os.Stdout, "  backend   %-8s %s\n", b.ID, b.Addr)
	}
	fmt.Fprintf(os.Stdout, "  ring      %s, %d backends\n\ntry: devgate sim --target %s --devices 1000\n\n",
		r.Mode(), r.Len(), l.Addr())
	return serveUntilSignal(p, l, *grace, log)
}

func runBackend(args []string) error {
	fs := flag.NewFlagSet("backend", flag.ContinueOnError)
	id := fs.String("id", "demo-1", "backend id, echoed to devices in the login reply")
	listen := fs.String("listen", "127.0.0.1:9101", "address to listen on")
	level := fs.String("log-level", "info", "debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return err
	}
	log, err := newLogger(*level, "console")
	if err != nil {
		return err
	}
	l, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	b := &demo.Backend{ID: *id, Logger: log}
	fmt.Fprintf(os.Stdout, "demo backend %s on %s\n", *id, l.Addr())
	errc := make(chan error, 1)
	go func() { errc <- b.Serve(l) }()
	return waitSignalThen(errc, b.Close)
}
