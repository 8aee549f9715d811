package daemon

import (
	"fmt"
	"os"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/sys/unix"
)

// NewLogger builds the daemon's logger writing to w. format "auto" is JSON
// unless w is a terminal: under systemd stderr goes to the journal, where
// one JSON object per line is what log shippers parse.
func NewLogger(level, format string, w *os.File) (*zap.Logger, error) {
	var lvl zapcore.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("daemon: log level %q: %w", level, err)
	}
	jsonOut := true
	switch format {
	case "json":
	case "console":
		jsonOut = false
	case "auto", "":
		jsonOut = !isTerminal(w)
	default:
		return nil, fmt.Errorf("daemon: log format %q not one of auto, json, console", format)
	}
	var enc zapcore.Encoder
	if jsonOut {
		ec := zap.NewProductionEncoderConfig()
		ec.EncodeTime = zapcore.RFC3339NanoTimeEncoder
		ec.EncodeDuration = zapcore.StringDurationEncoder
		enc = zapcore.NewJSONEncoder(ec)
	} else {
		ec := zap.NewDevelopmentEncoderConfig()
		ec.EncodeTime = zapcore.TimeEncoderOfLayout("15:04:05.000")
		enc = zapcore.NewConsoleEncoder(ec)
	}
	core := zapcore.NewCore(enc, zapcore.Lock(w), lvl)
	return zap.New(core, zap.ErrorOutput(zapcore.Lock(w))), nil
}

func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}
