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
	quit  chan struct{} // closed by close
	idle  time.Duration

	mu sync.Mutex // orders starting a worker with close
	wg sync.WaitGroup
}

func newWorkerPool(size int, idle time.Duration) *workerPool {
	return &workerPool{work: make(chan func()), slots: make(chan struct{}, size), quit: make(chan struct{}), idle: idle}
}

// run runs task on an idle worker, or on a new one, and waits while size
// workers are busy. It reports false, having run nothing, once the pool is
// closed.
func (p *workerPool) run(task func()) bool {
	select {
	case p.work <- task:
		return true
	default:
	}
	select {
	case p.work <- task:
		return true
	case p.slots <- struct{}{}:
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.closing() {
			<-p.slots
			return false
		}
		p.wg.Add(1)
		go p.worker(task)
		return true
	case <-p.quit:
		return false
	}
}

func (p *workerPool) worker(task func()) {
	defer p.wg.Done()
	defer func() { <-p.slots }()
	t := time.NewTimer(p.idle)
	defer t.Stop()
	for {
		task()
		t.Reset(p.idle)
		select {
		case task = <-p.work:
		case <-t.C:
			return
		case <-p.quit:
			return
		}
	}
}

// close waits for the tasks that run and ends the workers; a run from
// then on runs nothing.
func (p *workerPool) close() {
	p.mu.Lock()
	if !p.closing() {
		close(p.quit)
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// closing reports whether close has been called.
func (p *workerPool) closing() bool {
	select {
	case <-p.quit:
		return true
	default:
		return false
	}
}
