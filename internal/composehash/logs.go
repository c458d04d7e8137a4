package composehash

import (
	"context"
	"io"
	"log/slog"
	"strings"

	"github.com/sirupsen/logrus"
)

// RouteLogs sends what compose-go logs (through logrus' process-wide
// logger: "the attribute `version` is obsolete", "variable is not set")
// to log at debug level, instead of to stderr as unstructured lines. run
// calls it once it has built hookd's logger; calling it again replaces the
// route.
func RouteLogs(log *slog.Logger) {
	std := logrus.StandardLogger()
	std.SetOutput(io.Discard)
	std.ReplaceHooks(logrus.LevelHooks{})
	std.AddHook(slogHook{log: log})
}

type slogHook struct{ log *slog.Logger }

func (slogHook) Levels() []logrus.Level { return logrus.AllLevels }

func (h slogHook) Fire(e *logrus.Entry) error {
	h.log.Log(context.Background(), slog.LevelDebug, "compose file loader", "message", strings.TrimSpace(e.Message))
	return nil
}
