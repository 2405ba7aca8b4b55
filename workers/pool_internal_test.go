package workers

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestWorkerPool: at most size tasks run at once, run waits for a free
// worker, idle workers end, and close waits for the tasks that run.
func TestWorkerPool(t *testing.T) {
	const size = 4
	p := newWorkerPool(size, 50*time.Millisecond)
	var running, most atomic.Int32
	release := make(chan struct{})
	task := func() {
		n := running.Add(1)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
		<-release
		running.Add(-1)
	}
	var submitted sync.WaitGroup
	for range 2 * size {
		submitted.Go(func() { assert.True(t, p.run(task)) })
	}
	require.Eventually(t, func() bool { return running.Load() == size }, 5*time.Second, time.Millisecond)
	time.Sleep(20 * time.Millisecond)
	require.Equal(t, int32(size), running.Load(), "no more than size at once")
	close(release)
	submitted.Wait() // every run returned: its task was taken
	require.Eventually(t, func() bool { return running.Load() == 0 }, 5*time.Second, time.Millisecond)
	require.Equal(t, int32(size), most.Load())

	// Idle, the workers end.
	require.Eventually(t, func() bool { return len(p.slots) == 0 }, 5*time.Second, 5*time.Millisecond)

	// close waits for a task that runs; after it, run runs nothing.
	var done atomic.Bool
	require.True(t, p.run(func() { time.Sleep(50 * time.Millisecond); done.Store(true) }))
	p.close()
	require.True(t, done.Load())
	require.False(t, p.run(func() { t.Error("ran after close") }))
	p.close() // again: nothing
}

// TestWorkerPoolCloseWhileRunWaits: a run waiting for a free worker when
// close starts either runs its task or reports false, and close returns
// only after the task that ran.
func TestWorkerPoolCloseWhileRunWaits(t *testing.T) {
	p := newWorkerPool(1, time.Minute)
	release := make(chan struct{})
	var first, second atomic.Bool
	require.True(t, p.run(func() { <-release; first.Store(true) }))
	waited := make(chan bool)
	go func() { waited <- p.run(func() { second.Store(true) }) }()
	time.Sleep(20 * time.Millisecond) // the second run waits: the one worker is busy
	closed := make(chan struct{})
	go func() { p.close(); close(closed) }()
	select {
	case <-closed:
		t.Fatal("close returned while a task ran")
	case <-time.After(20 * time.Millisecond):
	}
	close(release)
	ran := <-waited
	<-closed
	require.True(t, first.Load())
	require.Equal(t, ran, second.Load(), "run reports whether its task ran")
}
