package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// engine is `weft dev` running as a child process.
type engine struct {
	cmd     *exec.Cmd
	pid     int
	dir     string // temporary: data dir and log
	logPath string
	apiURL  string
	natsURL string

	done    chan struct{} // closed when the process has exited
	waitErr error

	logMu sync.Mutex
	log   *os.File
}

var (
	apiLine  = regexp.MustCompile(`^\s*API\s+(http://\S+)`)
	natsLine = regexp.MustCompile(`^\s*NATS\s+(nats://\S+)`)
)

// startEngine runs `<bin> dev` on a fresh data dir and a free port and
// waits for the lines it prints once ready. Its stdout after the ready
// lines and its stderr go to a log file in the temporary directory.
func startEngine(bin string, hopPerNode bool, timeout time.Duration) (*engine, error) {
	dir, err := os.MkdirTemp("", "weft-bench-engine-*")
	if err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	args := []string{"dev",
		"--addr", "127.0.0.1:" + strconv.Itoa(port),
		"--data", filepath.Join(dir, "data"),
		"--rate-per-minute", "100000000",
		"--log-level", "warn",
	}
	if hopPerNode {
		args = append(args, "--hop-per-node")
	}
	e := &engine{dir: dir, logPath: filepath.Join(dir, "weft.log"), done: make(chan struct{})}
	if e.log, err = os.Create(e.logPath); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	e.cmd = exec.Command(bin, args...)
	// Its own process group: a Ctrl-C in the terminal reaches only us, and
	// we stop the engine with one SIGTERM. If we die, it gets SIGTERM too.
	e.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	e.cmd.Stderr = e.log
	stdout, err := e.cmd.StdoutPipe()
	if err != nil {
		e.log.Close()
		os.RemoveAll(dir)
		return nil, err
	}
	fmt.Printf("  starting %s %s\n", bin, strings.Join(args, " "))
	if err := e.cmd.Start(); err != nil {
		e.log.Close()
		os.RemoveAll(dir)
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	e.pid = e.cmd.Process.Pid
	go func() {
		e.waitErr = e.cmd.Wait()
		close(e.done)
	}()

	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stdout)
		signalled := false
		for sc.Scan() {
			line := sc.Text()
			e.logMu.Lock()
			fmt.Fprintln(e.log, line)
			if m := apiLine.FindStringSubmatch(line); m != nil && e.apiURL == "" {
				e.apiURL = m[1]
			}
			if m := natsLine.FindStringSubmatch(line); m != nil && e.natsURL == "" {
				e.natsURL = m[1]
			}
			if !signalled && e.apiURL != "" && e.natsURL != "" {
				signalled = true
				close(ready)
			}
			e.logMu.Unlock()
		}
		_, _ = io.Copy(io.Discard, stdout)
	}()

	select {
	case <-ready:
		fmt.Printf("  weft dev ready (pid %d): API %s, NATS %s, log %s\n", e.pid, e.apiURL, e.natsURL, e.logPath)
		return e, nil
	case <-e.done:
		return e, fmt.Errorf("weft dev exited before ready (%v); log:\n%s", e.waitErr, e.tail(30))
	case <-time.After(timeout):
		return e, fmt.Errorf("weft dev not ready after %s; log:\n%s", timeout, e.tail(30))
	}
}

// stop sends SIGTERM to the engine's PID and waits for it to exit,
// escalating to SIGKILL (same PID) after grace. It reports how it ended.
func (e *engine) stop(grace time.Duration) string {
	if e == nil || e.cmd == nil || e.cmd.Process == nil {
		return ""
	}
	defer e.log.Close()
	select {
	case <-e.done:
		return fmt.Sprintf("weft dev (pid %d) had already exited: %v", e.pid, e.waitErr)
	default:
	}
	t0 := time.Now()
	_ = e.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-e.done:
		status := "cleanly"
		if e.waitErr != nil {
			status = e.waitErr.Error()
		}
		return fmt.Sprintf("weft dev (pid %d) stopped by SIGTERM in %s: %s", e.pid, time.Since(t0).Round(time.Millisecond), status)
	case <-time.After(grace):
		_ = e.cmd.Process.Kill()
		<-e.done
		return fmt.Sprintf("weft dev (pid %d) did not exit within %s of SIGTERM: killed", e.pid, grace)
	}
}

// alive reports whether the process is still running.
func (e *engine) alive() bool {
	select {
	case <-e.done:
		return false
	default:
		return true
	}
}

// rss returns the engine's resident set (VmRSS) and its peak (VmHWM) in MB.
func (e *engine) rss() (cur, peak float64) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", e.pid))
	if err != nil {
		return 0, 0
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		kb, err := strconv.ParseFloat(f[1], 64)
		if err != nil {
			continue
		}
		switch f[0] {
		case "VmRSS:":
			cur = kb / 1024
		case "VmHWM:":
			peak = kb / 1024
		}
	}
	return cur, peak
}

// logStats counts the log's lines by level, for the report.
func (e *engine) logStats() (lines int, byLevel map[string]int) {
	e.logMu.Lock()
	defer e.logMu.Unlock()
	byLevel = map[string]int{}
	f, err := os.Open(e.logPath)
	if err != nil {
		return 0, byLevel
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		lines++
		l := sc.Text()
		if strings.HasPrefix(l, "panic:") || strings.HasPrefix(l, "fatal error:") {
			byLevel["PANIC"]++
			continue
		}
		for _, lvl := range []string{"ERROR", "WARN"} {
			if strings.Contains(l, "level="+lvl) || strings.Contains(l, `"level":"`+lvl+`"`) {
				byLevel[lvl]++
				break
			}
		}
	}
	return lines, byLevel
}

// tail returns the last n lines of the log.
func (e *engine) tail(n int) string {
	b, err := os.ReadFile(e.logPath)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "    " + strings.Join(lines, "\n    ")
}

// cleanup removes the temporary directory unless keep is set.
func (e *engine) cleanup(keep bool) {
	if e == nil || e.dir == "" {
		return
	}
	if keep {
		fmt.Printf("  kept %s (data dir and weft.log)\n", e.dir)
		return
	}
	if err := os.RemoveAll(e.dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		fmt.Printf("  could not remove %s: %v\n", e.dir, err)
	}
}

// freePort asks the kernel for a free loopback port.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// usage is what the engine had spent at one moment: CPU time (user and
// system, from /proc) and bytes allocated (go_memstats_alloc_bytes_total
// from its /metrics); beside it, the load generator's CPU time and the
// machine's steal. Two of them give a phase's cost per execution, which
// depends much less on what else the machine ran at the time than its
// rate does.
type usage struct {
	cpu   time.Duration
	alloc float64 // bytes; 0 if /metrics could not be read
	// The load generator's own CPU time.
	gen time.Duration
	// The machine's CPU time stolen by the hypervisor, and all of it, in
	// clock ticks (/proc/stat).
	steal, total int64
}

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat's times: 100 on
// every Linux architecture Go supports.
const clockTicks = 100

// usage samples the engine's CPU time and allocated bytes, the load
// generator's CPU time and the machine's steal.
func (e *engine) usage(c *client) usage {
	var u usage
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", e.pid)); err == nil {
		// The fields after the command name, which is in parentheses and
		// may hold spaces: utime and stime are the 12th and 13th.
		if i := strings.LastIndexByte(string(b), ')'); i >= 0 {
			f := strings.Fields(string(b[i+1:]))
			if len(f) > 12 {
				ut, _ := strconv.ParseInt(f[11], 10, 64)
				st, _ := strconv.ParseInt(f[12], 10, 64)
				u.cpu = time.Duration(ut+st) * time.Second / clockTicks
			}
		}
	}
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		u.gen = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	u.steal, u.total = machineCPU()
	if status, body, err := c.do(context.Background(), http.MethodGet, "/metrics", nil, nil); err == nil && status == http.StatusOK {
		for line := range strings.SplitSeq(string(body), "\n") {
			if v, ok := strings.CutPrefix(line, "go_memstats_alloc_bytes_total "); ok {
				u.alloc, _ = strconv.ParseFloat(strings.TrimSpace(v), 64)
			}
		}
	}
	return u
}

// machineCPU reads the machine's CPU time stolen by the hypervisor and its
// CPU time in all, in clock ticks: the "cpu" line of /proc/stat, whose
// first eight fields are user, nice, system, idle, iowait, irq, softirq
// and steal. Zeros when it cannot be read.
func machineCPU() (steal, total int64) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0, 0
	}
	for i, v := range f[1:9] {
		n, _ := strconv.ParseInt(v, 10, 64)
		total += n
		if i == 7 {
			steal = n
		}
	}
	return steal, total
}
