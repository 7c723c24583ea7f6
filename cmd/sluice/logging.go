package main

import (
	"fmt"
	"log/slog"
	"os"
	"strings"
)

// logFlags are the root's --log-level and --log-format, for every command.
var logFlags struct{ level, format string }

// newLogger makes the logger --log-level and --log-format ask for.
func newLogger() (*slog.Logger, error) {
	var level slog.Level // info when unset (a command run without the root's flags)
	if err := level.UnmarshalText([]byte(logFlags.level)); logFlags.level != "" && err != nil {
		return nil, fmt.Errorf("--log-level: %q is not one of debug, info, warn, error", logFlags.level)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch strings.ToLower(logFlags.format) {
	case "text", "":
		return slog.New(slog.NewTextHandler(os.Stderr, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(os.Stderr, opts)), nil
	}
	return nil, fmt.Errorf("--log-format: %q is not text or json", logFlags.format)
}
