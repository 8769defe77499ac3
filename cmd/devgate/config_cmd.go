package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	"github.com/spf13/cobra"

	"github.com/devgate/devgate/pkg/config"
)

// defaultConfigFile is what serve reads without --config.
const defaultConfigFile = "devgate.yaml"

// errConfigInvalid ends `config check` with exit 1 once the errors are printed.
var errConfigInvalid = errors.New("config invalid")

// loadConfig loads and validates the config file. Without --config and
// without devgate.yaml here, it says how to pass one.
func loadConfig(path string, given bool, override func(*config.Config) error) (*config.Config, error) {
	cfg, err := config.LoadWith(path, override)
	if !given && errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("no %s in the current directory: pass --config FILE (deploy/devgate.example.yaml shows every field)", path)
	}
	return cfg, err
}

func newConfigCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "check config files",
		Args:  noArgs,
		RunE:  usageRunE,
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "check FILE...",
		Short: "load and validate config files, as serve would; exit 1 if one is invalid",
		Long: `Loads and validates each FILE as serve would, without listening or dialling
(like nginx -t or haproxy -c). Prints "FILE: OK" and what it would route to, or
each error with the file and the key; exits 1 if any file is invalid. The
files it names (certificates, keys, tokens) must open.`,
		Example: "  devgate config check deploy/devgate.example.yaml",
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usagef("want FILE...")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			return checkConfigs(cmd.OutOrStdout(), cmd.ErrOrStderr(), args)
		},
	})
	return cmd
}

// checkConfigs prints one verdict per file: OK on stdout, errors on stderr.
func checkConfigs(stdout, stderr io.Writer, paths []string) error {
	bad := false
	for _, p := range paths {
		cfg, err := config.Load(p)
		if err != nil {
			fmt.Fprintln(stderr, err)
			bad = true
			continue
		}
		if unreadable := checkFiles(stderr, p, cfg); unreadable {
			bad = true
			continue
		}
		src := plural(int64(len(cfg.Backends)), "static backend")
		if cfg.Etcd != nil {
			src = fmt.Sprintf("backends from etcd %v", cfg.Etcd.Endpoints)
		}
		fmt.Fprintf(stdout, "%s: OK (listen %s, %s, admin %s and http://%s)\n", p, cfg.ListenAddr(), src, cfg.Admin.GRPCAddr(), cfg.Admin.HTTPAddr())
	}
	if bad {
		return &exitError{code: exitFailed, err: errConfigInvalid, quiet: true}
	}
	return nil
}

// checkFiles opens each file the config names, as serve will, and reports
// the ones it cannot open.
func checkFiles(stderr io.Writer, path string, cfg *config.Config) (bad bool) {
	for _, f := range cfg.Files() {
		fh, err := os.Open(f.Path)
		if err != nil {
			fmt.Fprintf(stderr, "%s: %s: %v\n", path, f.Key, err)
			bad = true
			continue
		}
		fh.Close()
	}
	return bad
}
