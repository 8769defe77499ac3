package main

import (
	"github.com/devgate/devgate/pkg/config"
)

// defaultConfigFile is what serve reads without --config.
const defaultConfigFile = "devgate.yaml"

// loadConfig loads and validates the config file.
func loadConfig(path string, given bool, override func(*config.Config) error) (*config.Config, error) {
	return config.LoadWith(path, override)
}
