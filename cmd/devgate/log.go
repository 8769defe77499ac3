package main

import (
	"fmt"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/devgate/devgate/pkg/config"
	"github.com/devgate/devgate/pkg/proxy"
)

func newLogger(level, format string) (*zap.Logger, error) {
	cfg := zap.NewProductionConfig()
	if format == "console" {
		cfg = zap.NewDevelopmentConfig()
		cfg.Development = false
	}
	cfg.DisableStacktrace = true
	cfg.EncoderConfig.EncodeTime = zapcore.ISO8601TimeEncoder // not epoch seconds: readable, and sortable as text
	if level != "" {
		l, err := zapcore.ParseLevel(level)
		if err != nil {
			return nil, fmt.Errorf("log level: %w", err)
		}
		cfg.Level = zap.NewAtomicLevelAt(l)
	}
	return cfg.Build()
}

// accessLog is the proxy's access log from log.access: JSON lines at info
// on stderr whatever log.level and log.format say, and never sampled by
// zap (log.accessSample samples normal closes; log.accessErrorsPerSecond
// caps the error lines).
func accessLog(cfg *config.Config) (*proxy.AccessLog, error) {
	mode, err := proxy.ParseAccessMode(cfg.Log.AccessOr())
	if err != nil || mode == proxy.AccessOff {
		return nil, err
	}
	zc := zap.NewProductionConfig()
	zc.Sampling, zc.DisableStacktrace, zc.DisableCaller = nil, true, true
	zc.EncoderConfig.EncodeTime = zapcore.ISO8601TimeEncoder
	l, err := zc.Build()
	if err != nil {
		return nil, fmt.Errorf("access log: %w", err)
	}
	return &proxy.AccessLog{Logger: l.Named("access"), Mode: mode, Sample: cfg.Log.AccessSample,
		ErrorsPerSecond: cfg.Log.AccessErrorsPerSecond, Gateway: gatewayID(cfg)}, nil
}
