package daemon

import (
	"fmt"

	"github.com/startgate/startgate/internal/config"
	"github.com/startgate/startgate/internal/prefetch"
	"github.com/startgate/startgate/internal/pressure"
)

// startInputs are what the daemon reads at start besides the config
// file: the pressure source, and the files the config names that a bad
// start must be refused on (prefetch's webhook token and docker
// config.json). Run reads them with readStartInputs and `startgated
// config check` reads them the same way, so that the check refuses
// exactly what a start would: Config.Validate for the file's keys and
// values, then these.
type startInputs struct {
	src pressure.Source
	// token is prefetch.notifications' bearer token; "" when the
	// listener is off.
	token string
	// docker is prefetch.docker_config; nil when not set.
	docker *prefetch.DockerConfig
}

// readStartInputs reads them; cfg must be validated. Each error names
// the key.
func readStartInputs(cfg *config.Config) (startInputs, error) {
	var in startInputs
	var err error
	if in.src, err = pressureSource(cfg.Pressure); err != nil {
		return in, fmt.Errorf("%w (pressure.proc_root %q)", err, cfg.Pressure.ProcRoot)
	}
	pc := cfg.Prefetch
	if !pc.Enabled {
		return in, nil
	}
	if pc.Notifications.Listen != "" {
		if in.token, err = cfg.NotificationToken(); err != nil {
			return in, err
		}
	}
	if pc.DockerConfig != "" {
		if in.docker, err = prefetch.LoadDockerConfig(pc.DockerConfig); err != nil {
			return in, fmt.Errorf("daemon: prefetch.docker_config: %w", err)
		}
	}
	return in, nil
}
