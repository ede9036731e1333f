// Go peer for weft's scaling benchmarks: the work of each benchmark's
// definition written with goroutines and channels, run on GOMAXPROCS=N, so
// weft's figures compare one to one with Go's.
//
// Usage: peer-go <bench> [-w N] [-n SIZE]
//
//	skynet         1,111,111 goroutines; each parent sums its 10 children
//	               through an unbuffered channel (as the original skynet does).
//	               -n: number of leaves, a power of 10 (default 1,000,000).
//	fib            naive fib(n), every call with n >= 2 runs fib(n-1) in a new
//	               goroutine and joins it through a channel. -n: n (default 30).
//	spawn          one goroutine starts n empty goroutines, then waits for them
//	               all (sync.WaitGroup). -n: count (default 1,000,000).
//	yield          two goroutines alternately call runtime.Gosched(), n
//	               switches in total; always GOMAXPROCS=1. -n: switches
//	               (default 10,000,000).
//	chan-pingpong  two goroutines pass a token through two unbuffered channels.
//	               -n: round trips (default 1,000,000).
//	mutex          64 goroutines increment one counter under a sync.Mutex.
//	               -n: total increments (default 6,400,000); value is ns per
//	               lock/unlock pair.
//
// The worker count comes from -w, else from WEFT_WORKERS, else the number of
// CPUs. One warm-up run, then 5 measured runs; every run's result is checked
// and a wrong one exits with status 1. Output: one line,
//
//	bench=<name> impl=go workers=<N> value=<best> unit=<ms|ns> median=<median>
//
// with n=<SIZE> appended when -n changed the size.
//
// Build with the standard library only: GO111MODULE=off go build -o peer-go main.go
package main

import (
	"fmt"
	"os"
	"runtime"
	"sort"
	"strconv"
	"sync"
	"time"
)

const reps = 5

// A benchmark runs its work once at the given size and returns the figure
// to report (ms for the whole run, or ns per unit of work); a wrong result
// is returned as an error.
type benchmark struct {
	unit        string
	defaultSize int64
	oneWorker   bool // the definition fixes the worker count at 1
	run         func(size int64) (float64, error)
}

var benchmarks = map[string]benchmark{
	"skynet":        {"ms", 1000000, false, runSkynet},
	"fib":           {"ms", 30, false, runFib},
	"spawn":         {"ns", 1000000, false, runSpawn},
	"yield":         {"ns", 10000000, true, runYield},
	"chan-pingpong": {"ns", 1000000, false, runPingpong},
	"mutex":         {"ns", 6400000, false, runMutex},
}

func msSince(t0 time.Time) float64 {
	return float64(time.Since(t0).Nanoseconds()) / 1e6
}

func nsPer(t0 time.Time, count int64) float64 {
	return float64(time.Since(t0).Nanoseconds()) / float64(count)
}

// skynet sends on c the sum of the leaf numbers num..num+size-1, found by
// starting 10 goroutines on the tenths of the range.
func skynet(c chan<- int64, num, size int64) {
	if size == 1 {
		c <- num
		return
	}
	children := make(chan int64)
	part := size / 10
	for i := int64(0); i < 10; i++ {
		go skynet(children, num+i*part, part)
	}
	var sum int64
	for i := 0; i < 10; i++ {
		sum += <-children
	}
	c <- sum
}

func runSkynet(leaves int64) (float64, error) {
	for l := leaves; l > 1; l /= 10 {
		if l%10 != 0 {
			return 0, fmt.Errorf("skynet size %d is not a power of 10", leaves)
		}
	}
	t0 := time.Now()
	root := make(chan int64)
	go skynet(root, 0, leaves)
	sum := <-root
	ms := msSince(t0)
	if want := leaves * (leaves - 1) / 2; sum != want {
		return 0, fmt.Errorf("skynet sum %d, want %d", sum, want)
	}
	return ms, nil
}

// fib spawns a goroutine for fib(n-1), computes fib(n-2) itself, and joins
// the child by receiving its result.
func fib(n int64) int64 {
	if n < 2 {
		return n
	}
	child := make(chan int64, 1)
	go func() { child <- fib(n - 1) }()
	b := fib(n - 2)
	return <-child + b
}

func fibSerial(n int64) int64 {
	a, b := int64(0), int64(1)
	for i := int64(0); i < n; i++ {
		a, b = b, a+b
	}
	return a
}

func runFib(n int64) (float64, error) {
	t0 := time.Now()
	done := make(chan int64)
	go func() { done <- fib(n) }()
	r := <-done
	ms := msSince(t0)
	if want := fibSerial(n); r != want {
		return 0, fmt.Errorf("fib(%d) = %d, want %d", n, r, want)
	}
	return ms, nil
}

// runSpawn cannot check more than that the join completed: WaitGroup.Wait
// returns only after all count Done calls, and Done panics on a surplus.
func runSpawn(count int64) (float64, error) {
	joined := make(chan struct{})
	t0 := time.Now()
	go func() {
		var wg sync.WaitGroup
		wg.Add(int(count))
		for i := int64(0); i < count; i++ {
			go wg.Done()
		}
		wg.Wait()
		close(joined)
	}()
	<-joined
	return nsPer(t0, count), nil
}

// runYield checks that the goroutines really alternate: after nearly every
// yield (start-up and the last rounds aside) the other one must have run.
// last names the goroutine that ran most recently; the two never run at
// once, GOMAXPROCS being 1.
func runYield(switches int64) (float64, error) {
	var wg sync.WaitGroup
	var counts, alternated [2]int64
	last := -1
	half := switches / 2
	if half == 0 {
		return 0, fmt.Errorf("yield needs at least 2 switches")
	}
	t0 := time.Now()
	for g := 0; g < 2; g++ {
		wg.Add(1)
		go func(me int) {
			defer wg.Done()
			for i := int64(0); i < half; i++ {
				last = me
				runtime.Gosched()
				if last != me {
					alternated[me]++
				}
				counts[me]++
			}
		}(g)
	}
	wg.Wait()
	ns := nsPer(t0, 2*half)
	if counts[0] != half || counts[1] != half {
		return 0, fmt.Errorf("yield: counts %d/%d, want %d each", counts[0], counts[1], half)
	}
	if alt := alternated[0] + alternated[1]; alt < 2*half*9/10-4 {
		return 0, fmt.Errorf("yield: only %d of %d yields switched to the other goroutine", alt, 2*half)
	}
	return ns, nil
}

func runPingpong(trips int64) (float64, error) {
	ping := make(chan int64)
	pong := make(chan int64)
	var wg sync.WaitGroup
	var last int64
	t0 := time.Now()
	wg.Add(2)
	go func() {
		defer wg.Done()
		for i := int64(0); i < trips; i++ {
			ping <- i
			last = <-pong
		}
	}()
	go func() {
		defer wg.Done()
		for i := int64(0); i < trips; i++ {
			pong <- <-ping + 1
		}
	}()
	wg.Wait()
	ns := nsPer(t0, trips)
	if last != trips {
		return 0, fmt.Errorf("chan-pingpong: last token %d, want %d", last, trips)
	}
	return ns, nil
}

func runMutex(total int64) (float64, error) {
	const goroutines = 64
	if total < goroutines {
		total = goroutines
	}
	per := total / goroutines
	var mu sync.Mutex
	var counter int64
	var wg sync.WaitGroup
	t0 := time.Now()
	wg.Add(goroutines)
	for g := 0; g < goroutines; g++ {
		go func() {
			defer wg.Done()
			for i := int64(0); i < per; i++ {
				mu.Lock()
				counter++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	ns := nsPer(t0, per*goroutines)
	if counter != per*goroutines {
		return 0, fmt.Errorf("mutex: counter %d, want %d", counter, per*goroutines)
	}
	return ns, nil
}

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "peer-go: "+format+"\n", args...)
	os.Exit(1)
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: peer-go skynet|fib|spawn|yield|chan-pingpong|mutex [-w N] [-n SIZE]")
	os.Exit(2)
}

func parsePositive(what, s string) int64 {
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v < 1 {
		fail("%s must be a positive integer, not %q", what, s)
	}
	return v
}

func main() {
	args := os.Args[1:]
	if len(args) < 1 {
		usage()
	}
	name := args[0]
	b, ok := benchmarks[name]
	if !ok {
		fmt.Fprintf(os.Stderr, "peer-go: unknown benchmark %q\n", name)
		usage()
	}
	workers := int64(0)
	size := b.defaultSize
	for i := 1; i < len(args); i++ {
		if i+1 >= len(args) {
			usage()
		}
		switch args[i] {
		case "-w":
			workers = parsePositive("-w", args[i+1])
		case "-n":
			size = parsePositive("-n", args[i+1])
		default:
			usage()
		}
		i++
	}
	if workers == 0 {
		if env := os.Getenv("WEFT_WORKERS"); env != "" {
			workers = parsePositive("WEFT_WORKERS", env)
		} else {
			workers = int64(runtime.NumCPU())
		}
	}
	if b.oneWorker && workers != 1 {
		fmt.Fprintf(os.Stderr, "peer-go: %s runs on one worker by definition; ignoring -w %d\n", name, workers)
		workers = 1
	}
	runtime.GOMAXPROCS(int(workers))

	if _, err := b.run(size); err != nil {
		fail("%v", err)
	}
	var samples [reps]float64
	for r := range samples {
		v, err := b.run(size)
		if err != nil {
			fail("%v", err)
		}
		samples[r] = v
	}
	sort.Float64s(samples[:])
	line := fmt.Sprintf("bench=%s impl=go workers=%d value=%.1f unit=%s median=%.1f",
		name, workers, samples[0], b.unit, samples[reps/2])
	if size != b.defaultSize {
		line += fmt.Sprintf(" n=%d", size)
	}
	fmt.Println(line)
}
