// Command weft runs the Weft workflow engine: `weft dev` (everything in one
// process on embedded servers) and `weft serve` (chosen roles against real
// NATS, MongoDB and Redis).
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	_ "net/http/pprof" // served only when WEFT_PPROF_ADDR is set
	"os"
	"os/signal"
	"runtime/debug"
	"runtime/metrics"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/weftdev/weft/providers"
	"github.com/weftdev/weft/workers"
	"github.com/weftdev/weft/workers/nodes"
)

func main() {
	if err := rootCmd().Execute(); err != nil {
		os.Exit(1)
	}
}

func env(name, def string) string {
	if v, ok := os.LookupEnv(name); ok && v != "" {
		return v
	}
	return def
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil {
		return v
	}
	return def
}

func envDuration(name string, def time.Duration) time.Duration {
	if d, err := time.ParseDuration(os.Getenv(name)); err == nil {
		return d
	}
	return def
}

func envBool(name string) bool {
	b, _ := strconv.ParseBool(os.Getenv(name))
	return b
}

func rootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "weft",
		Short:         "Weft runs AI workflows over NATS JetStream",
		SilenceUsage:  true,
		SilenceErrors: false,
	}
	root.AddCommand(devCmd(), serveCmd(), workerCmd())
	return root
}

// commonFlags binds the flags every command shares; each defaults to its
// environment variable, so a flag given on the command line wins.
func commonFlags(cmd *cobra.Command, c *Config) {
	f := cmd.Flags()
	f.StringVar(&c.Addr, "addr", env("WEFT_ADDR", "127.0.0.1:8080"), "HTTP listen address (WEFT_ADDR)")
	f.StringVar(&c.NATSURL, "nats", env("WEFT_NATS_URL", ""), "NATS server URL (WEFT_NATS_URL)")
	f.StringVar(&c.MongoURI, "mongo", env("WEFT_MONGO_URI", ""), "MongoDB URI (WEFT_MONGO_URI)")
	f.StringVar(&c.RedisURL, "redis", env("WEFT_REDIS_URL", ""), "Redis URL (WEFT_REDIS_URL)")
	f.StringVar(&c.RedisPrefix, "redis-prefix", env("WEFT_REDIS_PREFIX", "weft:"), "prefix of every Redis key (WEFT_REDIS_PREFIX)")
	f.StringSliceVar(&c.CORSOrigins, "cors-origins", splitList(env("WEFT_CORS_ORIGINS", "")), "origins allowed to call the API from a browser (WEFT_CORS_ORIGINS)")
	f.IntVar(&c.RatePerMinute, "rate-per-minute", envInt("WEFT_RATE_PER_MINUTE", 1200), "requests per minute per user and per IP (WEFT_RATE_PER_MINUTE)")
	f.BoolVar(&c.RateFailClosed, "rate-fail-closed", envBool("WEFT_RATE_FAIL_CLOSED"), "answer 503 when rate limits cannot be checked (WEFT_RATE_FAIL_CLOSED)")
	f.StringVar(&c.LogLevel, "log-level", env("WEFT_LOG_LEVEL", "info"), "debug, info, warn or error (WEFT_LOG_LEVEL)")
	f.BoolVar(&c.HopPerNode, "hop-per-node", envBool("WEFT_HOP_PER_NODE"), "send pure nodes through JetStream too, instead of running them inline (WEFT_HOP_PER_NODE)")
	f.IntVar(&c.Concurrency, "concurrency", envInt("WEFT_CONCURRENCY", 64), "messages each consumer works on at once (WEFT_CONCURRENCY)")
	f.IntVar(&c.StreamReplicas, "stream-replicas", envInt("WEFT_STREAM_REPLICAS", 1), "replicas of every JetStream stream: 3 on a production cluster (WEFT_STREAM_REPLICAS)")
	f.DurationVar(&c.NodeTimeout, "node-timeout", envDuration("WEFT_NODE_TIMEOUT", 30*time.Second), "timeout of a node that sets none; a task is redelivered after twice this without a heartbeat (WEFT_NODE_TIMEOUT)")
	f.Int64Var(&c.EventsMaxMsgs, "events-max-msgs", int64(envInt("WEFT_EVENTS_MAX_MSGS", 0)), "events kept in WEFT_EVENTS (the dashboard's rebuild source); each costs the NATS server about 300 bytes of memory; 0: 100,000 in dev, 1,000,000 otherwise (WEFT_EVENTS_MAX_MSGS)")
	f.Int64Var(&c.EventsMaxBytes, "events-max-bytes", int64(envInt("WEFT_EVENTS_MAX_BYTES", 0)), "bytes of event history kept in WEFT_EVENTS (the dashboard's rebuild source); 0: 30 MiB in dev, 1 GiB otherwise (WEFT_EVENTS_MAX_BYTES)")
	f.IntVar(&c.MaxOutputBytes, "max-output-bytes", envInt("WEFT_MAX_OUTPUT_BYTES", workers.DefaultMaxOutputBytes), "largest output of one node, as JSON; a larger one fails the node with output_too_large (WEFT_MAX_OUTPUT_BYTES)")
	f.IntVar(&c.MaxExecutionBytes, "max-execution-bytes", envInt("WEFT_MAX_EXECUTION_BYTES", workers.DefaultMaxExecutionBytes), "most one execution holds: its inputs and every node's output, as JSON (WEFT_MAX_EXECUTION_BYTES)")
	f.StringSliceVar(&c.Types, "types", splitList(env("WEFT_TYPES", "")), "node types to run tasks for, e.g. http_request,ai_processor; empty: all (WEFT_TYPES)")
	c.JWTSecret = os.Getenv("WEFT_JWT_SECRET")
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func devCmd() *cobra.Command {
	var c Config
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Everything in one process, on embedded NATS, store and Redis unless URLs are given",
		RunE: func(cmd *cobra.Command, _ []string) error {
			c.Mode = ModeDev
			defer devMemoryLimit()()
			return runUntilSignal(cmd.Context(), c)
		},
	}
	commonFlags(cmd, &c)
	f := cmd.Flags()
	f.StringVar(&c.DataDir, "data", env("WEFT_DATA_DIR", "./.weft"), "data directory of the embedded servers (WEFT_DATA_DIR)")
	f.IntVar(&c.NATSPort, "nats-port", envInt("WEFT_NATS_PORT", 0), "port of the embedded NATS server, 0 for a free one (WEFT_NATS_PORT)")
	f.IntVar(&c.RedisPort, "redis-port", envInt("WEFT_REDIS_PORT", 0), "port of the embedded Redis server, 0 for a free one (WEFT_REDIS_PORT)")
	f.StringSliceVar(&c.Roles, "roles", splitList(env("WEFT_ROLES", "ingress,workers,projector")), "roles to run: ingress, workers, projector (WEFT_ROLES)")
	f.BoolVar(&c.NATSSyncAlways, "nats-sync-always", envBool("WEFT_NATS_SYNC_ALWAYS"), "the embedded NATS fsyncs every write (WEFT_NATS_SYNC_ALWAYS)")
	return cmd
}

// devMemoryLimitBytes is the least soft memory limit of `weft dev`
// unless GOMEMLIMIT sets one. The process holds the NATS and Redis
// servers too, and at its default pace the collector lets the heap grow
// to twice what is live. Under full load 56 to 67 MB is live; at this
// limit the heap stays near 100 MB and the process's RSS near 135 MB (it
// counts the binary's code too). Against 256 MiB, the collector's share
// of the CPU goes from about 7% to about 13%, and the throughput at full
// load is 10 to 20% lower: GOMEMLIMIT=256MiB buys it back for about 55 MB.
const devMemoryLimitBytes = 100 << 20

// devMemoryLimit sets the soft memory limit of `weft dev` and, until the
// returned function is called, keeps it at devLimit of what the last
// collection found live, so that a heavier workload (large payloads, a
// backlog) raises it rather than has the collector run without pause. The
// returned function stops that and puts the previous limit back.
func devMemoryLimit() (restore func()) {
	if os.Getenv("GOMEMLIMIT") != "" {
		return func() {}
	}
	prev := debug.SetMemoryLimit(devMemoryLimitBytes)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		live := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			metrics.Read(live)
			if live[0].Value.Kind() == metrics.KindUint64 {
				debug.SetMemoryLimit(devLimit(live[0].Value.Uint64()))
			}
		}
	}()
	return func() {
		cancel()
		<-done
		debug.SetMemoryLimit(prev)
	}
}

// devLimit is the soft memory limit for a live heap of live bytes: the
// least limit, or half as much again as what is live, whichever is more.
// The limit counts all of the runtime's memory (stacks, metadata), not
// only the heap, so the collector then runs somewhat more often than with
// GOGC=50, and never without pause.
func devLimit(live uint64) int64 {
	return max(devMemoryLimitBytes, int64(live+live/2))
}

func serveCmd() *cobra.Command {
	var c Config
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the chosen roles against external NATS, MongoDB and Redis",
		RunE: func(cmd *cobra.Command, _ []string) error {
			c.Mode = ModeServe
			return runUntilSignal(cmd.Context(), c)
		},
	}
	commonFlags(cmd, &c)
	cmd.Flags().StringSliceVar(&c.Roles, "roles", splitList(env("WEFT_ROLES", "ingress,workers,projector")), "roles to run: ingress, workers, projector (WEFT_ROLES)")
	return cmd
}

func workerCmd() *cobra.Command {
	var c Config
	cmd := &cobra.Command{
		Use:   "worker",
		Short: "One worker pool: the starter and the node types given by --types, against external NATS and store",
		RunE: func(cmd *cobra.Command, _ []string) error {
			c.Mode = ModeWorker
			return runUntilSignal(cmd.Context(), c)
		},
	}
	commonFlags(cmd, &c)
	cmd.Flags().StringVar(&c.DataDir, "data", env("WEFT_DATA_DIR", ""), "directory of a SQLite store shared with the other processes of this host, when no --mongo is given (WEFT_DATA_DIR)")
	return cmd
}

// runUntilSignal starts Weft and stops it cleanly on SIGINT or SIGTERM.
func runUntilSignal(parent context.Context, c Config) error {
	if parent == nil {
		parent = context.Background()
	}
	ctx, stop := signal.NotifyContext(parent, os.Interrupt, syscall.SIGTERM)
	defer stop()
	log, err := newLogger(c.LogLevel)
	if err != nil {
		return err
	}
	if addr := os.Getenv("WEFT_PPROF_ADDR"); addr != "" {
		// Profiling on a listener of its own, never on the API's.
		go func() {
			log.Info("pprof listening", "addr", addr)
			if err := http.ListenAndServe(addr, nil); err != nil {
				log.Error("pprof", "err", err)
			}
		}()
	}
	// HTTP_REQUEST refuses loopback, private and link-local addresses
	// unless told otherwise (metadata addresses always).
	nodes.ConfigureHTTP(nodes.HTTPConfig{AllowPrivate: envBool("WEFT_HTTP_ALLOW_PRIVATE")})
	// AI providers: GEMINI_API_KEY, GROQ_API_KEY, HF_TOKEN,
	// OPENROUTER_API_KEY, and WEFT_<PROVIDER>_BASE_URL / _MODEL.
	c.AI = providers.ConfigFromEnv(os.LookupEnv)
	m := &Main{Config: c, Log: log}
	if err := m.Run(ctx); err != nil {
		m.Close()
		return err
	}
	m.PrintReady(os.Stdout)
	<-ctx.Done()
	log.Info("shutting down")
	done := make(chan struct{})
	go func() { m.Close(); close(done) }()
	select {
	case <-done:
		return nil
	case <-time.After(15 * time.Second):
		return errors.New("shutdown took longer than 15 s")
	}
}

func newLogger(level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log level %q: %w", level, err)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l})), nil
}
