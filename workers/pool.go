package workers

import (
	"sync"
	"time"
)

// workerPool runs tasks on at most size goroutines, started when no idle
// one is there to take a task and ended once idle for idle. A busy pool
// keeps its goroutines, and their grown stacks; an idle one holds none.
// (ants, the usual library for this, starts a pool of its own with two
// goroutines when it is imported.)
type workerPool struct {
	work  chan func()   // unbuffered: taken only by an idle worker
	slots chan struct{} // one per running worker
	idle  time.Duration
	wg    sync.WaitGroup
}

func newWorkerPool(size int, idle time.Duration) *workerPool {
	return &workerPool{work: make(chan func()), slots: make(chan struct{}, size), idle: idle}
}

// run runs task on an idle worker, or on a new one, and waits while size
// workers are busy. It must not be called once close has been.
func (p *workerPool) run(task func()) {
	select {
	case p.work <- task:
		return
	default:
	}
	select {
	case p.work <- task:
	case p.slots <- struct{}{}:
		p.wg.Go(func() { p.worker(task) })
	}
}

func (p *workerPool) worker(task func()) {
	defer func() { <-p.slots }()
	t := time.NewTimer(p.idle)
	defer t.Stop()
	for {
		task()
		t.Reset(p.idle)
		select {
		case next, ok := <-p.work:
			if !ok {
				return
			}
			task = next
		case <-t.C:
			return
		}
	}
}

// close waits for the tasks that run and ends the workers.
func (p *workerPool) close() {
	close(p.work)
	p.wg.Wait()
}
