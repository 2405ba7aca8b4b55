// Command weft-bench is `make bench`: it loads a `weft dev` process the way
// users do and sets what the engine achieves beside what bare JetStream
// achieves on the same machine in the same run.
//
// What is measured, in order:
//
//  1. Raw JetStream: an in-process nats-server (JetStream, file storage in
//     a temporary directory, loopback) and a work-queue stream. A Consume
//     callback (PullMaxMessages) feeds -raw-workers goroutines; each
//     message handled publishes one new message (async, waiting for its
//     PubAck) and then acks: one engine hop without the engine. The stream
//     is seeded with -raw-chains messages, so that many chains run at
//     once. Reported as hops/s, with a Nats-Msg-Id on every publish (as
//     the engine's tasks carry) and without one for reference.
//  2. The engine as a separate process: `weft dev` on a fresh data dir and
//     a free port, rate limits out of the way, optionally --hop-per-node.
//     Its RSS (VmRSS from /proc) is read at the end of each phase; RSS
//     covers everything `weft dev` embeds (NATS, store, Redis).
//  3. Phase A: POST /api/executions?wait=5s of a five-node workflow shaped
//     like the seed example (INPUT → TRANSFORM → CONDITION → one of two
//     TRANSFORMs → OUTPUT; five nodes run, one skipped), at concurrency 1
//     and at -c, over keep-alive connections. Every answer must be 200,
//     completed, with the nodes and output its inputs imply; anything else
//     is counted as an error with its reason. Latency is end to end as the
//     client sees it.
//  4. Phase B: -diamond executions of a ten-node diamond (INPUT → eight
//     TRANSFORMs → OUTPUT) published at once straight to
//     weft.executions.submit (JetStream, Nats-Msg-Id = execution id), then
//     waited for on weft.events.*.<terminal kind>. Latency runs from
//     publish to terminal event, so it includes the time spent queued
//     behind the rest of the burst: it is a backlog drain, not a service
//     time.
//  5. Phase C: phase A's load at -c for -sustain, to see whether rate and
//     memory hold.
//
// Reading the ratio: "steps/s ÷ raw" divides the engine's node steps per
// second by the raw hop rate with Nats-Msg-Id. With --hop-per-node every
// node costs at least one such hop plus store writes and event publishes,
// so the ratio is below 1 and says how much of the broker's capacity the
// engine turns into nodes (0.5 means the engine's own work costs as much as
// the hop). Without it, pure nodes run inline in the worker that holds the
// execution, so a ratio above 1 is possible and shows what fusing saves.
//
// The load generator shares the machine with the engine, as wrk would; on
// a small machine both figures are lower than on a quiet large one, and
// the ratio is what travels. Load average is printed so that a busy
// machine shows in the report.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"
)

type config struct {
	weft       string
	c          int
	diamond    int
	durationA  time.Duration
	requests1  int
	sustain    time.Duration
	hopPerNode bool
	rawWorkers int
	rawChains  int
	rawDur     time.Duration
	timeoutB   time.Duration
	keep       bool
}

func main() {
	var cfg config
	flag.StringVar(&cfg.weft, "weft", "./bin/weft", "path of the weft binary to run as `weft dev`")
	flag.IntVar(&cfg.c, "c", 32, "concurrency of phases A (second run) and C")
	flag.IntVar(&cfg.diamond, "diamond", 10000, "executions of the diamond published in phase B (0 skips)")
	flag.DurationVar(&cfg.durationA, "duration-a", 15*time.Second, "length of phase A at -c; the c=1 run takes at most 10s or this, whichever is less")
	flag.IntVar(&cfg.requests1, "requests-1", 2000, "requests of phase A at c=1 (it stops earlier when its time is up)")
	flag.DurationVar(&cfg.sustain, "sustain", 5*time.Minute, "length of phase C (0 skips)")
	flag.BoolVar(&cfg.hopPerNode, "hop-per-node", false, "pass --hop-per-node to weft dev: every node through JetStream")
	flag.IntVar(&cfg.rawWorkers, "raw-workers", 64, "goroutines of the raw JetStream loop (the engine's default --concurrency)")
	flag.IntVar(&cfg.rawChains, "raw-chains", 64, "messages seeded in the raw loop: concurrent chains")
	flag.DurationVar(&cfg.rawDur, "raw-duration", 8*time.Second, "length of each raw JetStream run (0 skips)")
	flag.DurationVar(&cfg.timeoutB, "timeout-b", 5*time.Minute, "how long phase B waits for its terminal events")
	flag.BoolVar(&cfg.keep, "keep", false, "keep the engine's data dir and log")
	cpuProfile := flag.String("cpuprofile", "", "write the load generator's own CPU profile to this file")
	flag.Parse()
	if *cpuProfile != "" {
		stopProfile, err := profileCPU(*cpuProfile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "weft-bench:", err)
			os.Exit(1)
		}
		defer stopProfile()
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg); err != nil {
		fmt.Fprintln(os.Stderr, "weft-bench:", err)
		os.Exit(1) //nolint:gocritic // the profile of a failed run is not wanted
	}
}

// profileCPU starts a CPU profile of this process into path; the func
// stops it and closes the file.
func profileCPU(path string) (func(), error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}

func run(ctx context.Context, cfg config) error {
	runID := strconv.FormatInt(time.Now().UnixNano(), 36)
	mode := "fused (pure nodes inline)"
	if cfg.hopPerNode {
		mode = "hop per node"
	}
	fmt.Printf("weft-bench %s: %s, engine mode %s, load avg %s\n", runID, cfg.weft, mode, loadavg())

	var raws []rawResult
	if cfg.rawDur > 0 {
		fmt.Println("== raw JetStream consume → publish → ack")
		r, err := measureRaw(ctx, rawConfig{workers: cfg.rawWorkers, chains: cfg.rawChains, warmup: time.Second, duration: cfg.rawDur})
		raws = r
		if err != nil {
			return fmt.Errorf("raw JetStream: %w", err)
		}
	}

	fmt.Println("== engine")
	eng, err := startEngine(cfg.weft, cfg.hopPerNode, 90*time.Second)
	defer func() {
		if msg := eng.stop(30 * time.Second); msg != "" {
			fmt.Println("  " + msg)
		}
		if eng != nil && eng.logPath != "" {
			lines, lv := eng.logStats()
			fmt.Printf("  engine log: %d lines (warn %d, error %d, panic %d)\n", lines, lv["WARN"], lv["ERROR"], lv["PANIC"])
			if lv["WARN"]+lv["ERROR"]+lv["PANIC"] > 0 {
				fmt.Println("  last lines of the engine log:\n" + eng.tail(15))
			}
		}
		eng.cleanup(cfg.keep || err != nil)
	}()
	if err != nil {
		return err
	}
	idle, _ := eng.rss()
	fmt.Printf("  RSS idle %.0f MB\n", idle)

	c := newClient(eng.apiURL)
	s, err := prepare(ctx, c, runID)
	if err != nil {
		return fmt.Errorf("set up user, key and workflows: %w", err)
	}
	fmt.Printf("  user, API key and workflows ready (seed %s, diamond %s)\n", s.seedID, s.diamond)

	var results []result
	var before usage
	begin := func() { before = eng.usage(c) }
	record := func(r result) {
		r.rss, r.hwm = eng.rss()
		r.setCost(before, eng.usage(c))
		fmt.Printf("  -> %s: %d ok, %.0f exec/s, %.0f steps/s, p50 %s p99 %s, %d errors, RSS %.0f MB (peak %.0f MB), engine CPU %s and %.1f KB allocated per execution, load generator CPU %s per execution, steal %.1f%%, load avg %s\n",
			r.name, r.ok, r.execRate(), r.stepRate(), ms(r.pct(50)), ms(r.pct(99)), r.errorCount(), r.rss, r.hwm, us(r.cpuPerExec), r.allocPerExec/1024, us(r.genPerExec), r.steal*100, loadavg())
		if r.errorCount() > 0 {
			fmt.Printf("     errors: %s\n", r.errorSummary())
		}
		if !eng.alive() {
			fmt.Printf("     weft dev has exited: %v\n", eng.waitErr)
		}
		results = append(results, r)
	}

	// Warm-up, not counted: caches filled, connections open.
	fmt.Println("== warm-up (not counted)")
	w := httpLoad(ctx, c, s, "warm-up", 4, 3*time.Second, 200, eng)
	fmt.Printf("  warm-up: %d ok, %d errors %s\n", w.ok, w.errorCount(), w.errorSummary())

	fmt.Println("== phase A: POST /api/executions?wait=5s, seed shape")
	d1 := min(10*time.Second, cfg.durationA)
	begin()
	record(httpLoad(ctx, c, s, "A c=1", 1, d1, cfg.requests1, eng))
	if ctx.Err() == nil {
		begin()
		record(httpLoad(ctx, c, s, fmt.Sprintf("A c=%d", cfg.c), cfg.c, cfg.durationA, 0, eng))
	}

	if cfg.diamond > 0 && ctx.Err() == nil {
		fmt.Printf("== phase B: %d diamond executions published to weft.executions.submit\n", cfg.diamond)
		begin()
		r, err := natsBurst(ctx, eng.natsURL, s, runID, cfg.diamond, cfg.timeoutB, eng)
		if err != nil && ctx.Err() == nil {
			fmt.Printf("  phase B: %v\n", err)
		}
		r.name = fmt.Sprintf("B NATS %d", cfg.diamond)
		record(r)
	}

	if cfg.sustain > 0 && ctx.Err() == nil {
		fmt.Printf("== phase C: sustained c=%d for %s\n", cfg.c, cfg.sustain)
		begin()
		record(httpLoad(ctx, c, s, fmt.Sprintf("C c=%d %s", cfg.c, cfg.sustain), cfg.c, cfg.sustain, 0, eng))
	}

	printTable(cfg, mode, raws, idle, results)
	if ctx.Err() != nil {
		return fmt.Errorf("interrupted")
	}
	return nil
}

func printTable(cfg config, mode string, raws []rawResult, idle float64, results []result) {
	var raw float64
	fmt.Printf("\n== weft-bench results (%s, %d CPUs, load avg %s)\n", mode, runtime.NumCPU(), loadavg())
	for _, r := range raws {
		label := "with Nats-Msg-Id"
		if !r.msgID {
			label = "without Nats-Msg-Id"
		} else {
			raw = r.rate()
		}
		fmt.Printf("raw JetStream hop (consume → publish → PubAck → ack, file store), %s: %.0f hops/s\n", label, r.rate())
	}
	fmt.Printf("engine RSS idle: %.0f MB\n\n", idle)
	fmt.Printf("%-20s %10s %7s %8s %12s %9s %9s %9s %7s %14s %10s %8s %10s\n",
		"phase", "executions", "errors", "exec/s", "node steps/s", "p50", "p95", "p99", "RSS MB", "steps/s ÷ raw", "CPU/exec", "KB/exec", "gen CPU")
	for _, r := range results {
		ratio := "-"
		if raw > 0 {
			ratio = fmt.Sprintf("%.2f", r.stepRate()/raw)
		}
		fmt.Printf("%-20s %10d %7d %8.0f %12.0f %9s %9s %9s %7.0f %14s %10s %8.1f %10s\n",
			r.name, r.ok, r.errorCount(), r.execRate(), r.stepRate(), ms(r.pct(50)), ms(r.pct(95)), ms(r.pct(99)), r.rss, ratio,
			us(r.cpuPerExec), r.allocPerExec/1024, us(r.genPerExec))
	}
	// What the CPU per execution means on this machine: the rate the
	// engine would reach with every core to itself.
	for _, r := range results {
		if r.cpuPerExec > 0 && strings.HasPrefix(r.name, "C ") {
			fmt.Printf("at %s of engine CPU per execution, %d cores give at most %.0f executions/s with nothing else running (the load generator shares them here)\n",
				us(r.cpuPerExec), runtime.NumCPU(), float64(runtime.NumCPU())*float64(time.Second)/float64(r.cpuPerExec))
		}
	}
	for _, r := range results {
		if r.errorCount() > 0 {
			fmt.Printf("errors in %s: %s\n", r.name, r.errorSummary())
		}
	}
}

// us formats a CPU time per execution in microseconds.
func us(d time.Duration) string {
	if d <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.0fµs", float64(d)/1e3)
}

// ms formats a latency in milliseconds.
func ms(d time.Duration) string {
	switch {
	case d == 0:
		return "-"
	case d < 10*time.Millisecond:
		return fmt.Sprintf("%.2fms", float64(d)/1e6)
	case d < time.Second:
		return fmt.Sprintf("%.1fms", float64(d)/1e6)
	default:
		return fmt.Sprintf("%.2fs", d.Seconds())
	}
}

// loadavg is the 1-minute load average, or "?".
func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return "?"
	}
	return f[0]
}
