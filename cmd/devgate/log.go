package main

import (
	"fmt"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
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
