package daemon

import (
	"fmt"
	"io"
	"os"

	"github.com/sirupsen/logrus"

	"go.uber.org/zap"
	"go.uber.org/zap/buffer"
	"go.uber.org/zap/zapcore"
	"golang.org/x/sys/unix"
)

// NewLogger builds the daemon's logger writing to w, and returns its level,
// which a config reload changes in place. format "auto" is JSON
// unless w is a terminal: under systemd stderr goes to the journal, where
// one JSON object per line is what log shippers parse.
func NewLogger(level, format string, w *os.File) (*zap.Logger, zap.AtomicLevel, error) {
	lvl := zap.NewAtomicLevel()
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, lvl, fmt.Errorf("daemon: log level %q: %w", level, err)
	}
	jsonOut := true
	switch format {
	case "json":
	case "console":
		jsonOut = false
	case "auto", "":
		jsonOut = !isTerminal(w)
	default:
		return nil, lvl, fmt.Errorf("daemon: log format %q not one of auto, json, console", format)
	}
	var enc zapcore.Encoder
	if jsonOut {
		ec := zap.NewProductionEncoderConfig()
		ec.EncodeTime = zapcore.RFC3339NanoTimeEncoder
		// "1.5s", not zap's production default of float seconds (1.5)
		// nor nanoseconds: durations are read by people in the journal.
		// The console format's development config does the same.
		ec.EncodeDuration = zapcore.StringDurationEncoder
		enc = zapcore.NewJSONEncoder(ec)
	} else {
		ec := zap.NewDevelopmentEncoderConfig()
		ec.EncodeTime = zapcore.TimeEncoderOfLayout("15:04:05.000")
		enc = zapcore.NewConsoleEncoder(ec)
	}
	if isJournalStream(w) {
		enc = priorityEncoder{enc}
	}
	core := zapcore.NewCore(enc, zapcore.Lock(w), lvl)
	return zap.New(core, zap.ErrorOutput(zapcore.Lock(w))), lvl, nil
}

// isJournalStream reports whether w is the stream systemd connected to
// the journal for this service: $JOURNAL_STREAM names its device and inode.
func isJournalStream(w *os.File) bool {
	env := os.Getenv("JOURNAL_STREAM")
	if env == "" {
		return false
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(w.Fd()), &st); err != nil {
		return false
	}
	return env == fmt.Sprintf("%d:%d", st.Dev, st.Ino)
}

// priorityEncoder starts each line with its syslog priority, "<6>" for
// info, which journald takes off and keeps as the entry's PRIORITY
// (SyslogLevelPrefix=, on by default): journalctl -p warning then shows
// the daemon's warnings and errors only, where without it every line of
// the stream would be info.
type priorityEncoder struct{ zapcore.Encoder }

var linePool = buffer.NewPool()

func (e priorityEncoder) Clone() zapcore.Encoder { return priorityEncoder{e.Encoder.Clone()} }

func (e priorityEncoder) EncodeEntry(ent zapcore.Entry, fields []zapcore.Field) (*buffer.Buffer, error) {
	b, err := e.Encoder.EncodeEntry(ent, fields)
	if err != nil {
		return b, err
	}
	out := linePool.Get()
	out.AppendString(syslogPriority(ent.Level))
	_, _ = out.Write(b.Bytes())
	b.Free()
	return out, nil
}

// syslogPriority is sd-daemon(3)'s prefix for a zap level.
func syslogPriority(l zapcore.Level) string {
	switch {
	case l <= zapcore.DebugLevel:
		return "<7>"
	case l == zapcore.InfoLevel:
		return "<6>"
	case l == zapcore.WarnLevel:
		return "<4>"
	case l == zapcore.ErrorLevel:
		return "<3>"
	default: // dpanic, panic, fatal
		return "<2>"
	}
}

func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// routeContainerdLogs sends what containerd's client libraries log (the
// docker resolver, through logrus: "trying next host" when a mirror
// fails, "fetch failed") to log, named "containerd", instead of plain
// text on stderr that the journal could not parse. Their info lines
// repeat what startgated's own errors say, so they are debug here; their
// warnings and errors keep their level. It sets logrus's global logger:
// call it once per process.
func routeContainerdLogs(log *zap.Logger) {
	logrus.SetOutput(io.Discard)
	logrus.SetLevel(logrus.InfoLevel)
	logrus.StandardLogger().ReplaceHooks(logrus.LevelHooks{})
	logrus.AddHook(logrusHook{log: log.Named("containerd")})
}

type logrusHook struct{ log *zap.Logger }

func (logrusHook) Levels() []logrus.Level { return logrus.AllLevels }

func (h logrusHook) Fire(e *logrus.Entry) error {
	fields := make([]zap.Field, 0, len(e.Data))
	for k, v := range e.Data {
		fields = append(fields, zap.Any(k, v))
	}
	switch {
	case e.Level <= logrus.ErrorLevel:
		h.log.Error(e.Message, fields...)
	case e.Level == logrus.WarnLevel:
		h.log.Warn(e.Message, fields...)
	default:
		h.log.Debug(e.Message, fields...)
	}
	return nil
}
