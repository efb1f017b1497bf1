// Command client is the Go net/rpc load generator of the fastrpc cross-library benchmark.
//
//	client -codec gob|json --address 127.0.0.1:PORT --workload seq|pipelined|payload|fanin \
//	       --duration SECONDS [--inflight N] [--connections C] [--payload-size BYTES] [--max-calls N]
//
// Workloads (net/rpc multiplexes calls on one connection, so each one is run as stated):
//
//	seq        one connection, one Bench.Add(i, 1) at a time;
//	pipelined  one connection, N calls of Bench.Add in flight (default 64);
//	payload    one connection, Bench.Echo of --payload-size random bytes (default 65536), one at a time;
//	fanin      C connections (default 8), each with N calls in flight (default 16).
//
// Every connection is driven by one goroutine that keeps its N calls in flight with
// rpc.Client.Go and collects them from a shared Done channel, timing each call on the monotonic
// clock and checking its result (a connection with no reply for 10 s is given up, its calls
// counted as failed). A warm-up (0.2 s or 200 calls, whichever comes first) runs
// first and is not counted; then calls are started until --duration seconds have passed or
// --max-calls calls were started, and the ones in flight are waited for. The client prints one
// line of JSON on stdout and exits 0, also when the workload cannot be run (then "error" says
// why). A watchdog ends it, with an error JSON, at duration + 12 s.
package main

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"net"
	"net/rpc"
	"net/rpc/jsonrpc"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

const (
	warmupSeconds  = 0.2
	warmupCalls    = 200
	connectTimeout = 10 * time.Second
	callTimeout    = 10 * time.Second
	watchdogGrace  = 12 * time.Second
	maxErrors      = 1000
)

// AddArgs are the arguments of Bench.Add (same field names as the server's).
type AddArgs struct {
	A, B int64
}

// Result is the one line of JSON the client prints.
type Result struct {
	System       string  `json:"system"`
	Workload     string  `json:"workload"`
	Calls        int     `json:"calls"`
	ElapsedS     jfloat  `json:"elapsed_s"`
	CallsPerS    jfloat  `json:"calls_per_s"`
	P50us        jfloat  `json:"p50_us"`
	P99us        jfloat  `json:"p99_us"`
	PayloadBytes int     `json:"payload_bytes"`
	Errors       int     `json:"errors"`
	Note         *string `json:"note"`
	Error        *string `json:"error"`
	Codec        string  `json:"codec"`
	GoMaxProcs   int     `json:"gomaxprocs"`
	WarmupCalls  int64   `json:"warmup_calls"`
}

// jfloat is a float64 that always encodes as a JSON float ("12.0", never "12"), as Python's
// json module writes floats, so that readers checking the type see a float.
type jfloat float64

func (f jfloat) MarshalJSON() ([]byte, error) {
	s := strconv.FormatFloat(float64(f), 'f', -1, 64)
	if !strings.ContainsAny(s, ".eEn") {
		s += ".0"
	}
	return []byte(s), nil
}

var emitOnce sync.Once

// emit prints the result once per process; later calls do nothing.
func emit(r Result) {
	emitOnce.Do(func() {
		b, err := json.Marshal(r)
		if err != nil {
			b = []byte(fmt.Sprintf(`{"system": %q, "workload": %q, "calls": 0, "elapsed_s": 0.0, "calls_per_s": 0.0, "p50_us": 0.0, "p99_us": 0.0, "payload_bytes": 0, "errors": 0, "note": null, "error": %q}`,
				r.System, r.Workload, "cannot encode result: "+err.Error()))
		}
		os.Stdout.Write(append(b, '\n'))
	})
}

func strp(s string) *string { return &s }

func round1(x float64) float64 { return math.Round(x*10) / 10 }

// percentileUs is the nearest-rank percentile of sorted nanosecond samples, in microseconds.
func percentileUs(sorted []int64, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(q * float64(len(sorted))))
	if rank < 1 {
		rank = 1
	}
	return float64(sorted[rank-1]) / 1000
}

// phase is the shared stop rule of a warm-up or measured run.
type phase struct {
	start    time.Time
	deadline time.Time
	maxCalls int64
	started  int64 // atomic
	stopped  int32 // atomic
	errs     int64 // atomic
	firstErr atomic.Value
}

func newPhase(seconds float64, maxCalls int64) *phase {
	now := time.Now()
	return &phase{start: now, deadline: now.Add(time.Duration(seconds * float64(time.Second))), maxCalls: maxCalls}
}

// take reports whether one more call may be started.
func (p *phase) take() bool {
	if atomic.LoadInt32(&p.stopped) != 0 || !time.Now().Before(p.deadline) {
		return false
	}
	return atomic.AddInt64(&p.started, 1) <= p.maxCalls
}

func (p *phase) fail(msg string) {
	p.firstErr.CompareAndSwap(nil, msg)
	if atomic.AddInt64(&p.errs, 1) >= maxErrors {
		atomic.StoreInt32(&p.stopped, 1)
	}
}

func (p *phase) errorCount() int { return int(atomic.LoadInt64(&p.errs)) }

func (p *phase) first() string {
	if v := p.firstErr.Load(); v != nil {
		return v.(string)
	}
	return ""
}

// slot is one call in flight on a connection.
type slot struct {
	start time.Time
	i     int64
	args  AddArgs
	sum   int64
	echo  []byte
}

type connResult struct {
	lat  []int64
	last time.Time
}

// drive keeps window calls in flight on one connection until the phase says stop.
func drive(c *rpc.Client, window int, p *phase, isAdd bool, payload []byte, record bool, base int64) connResult {
	var res connResult
	done := make(chan *rpc.Call, window)
	pending := make(map[*rpc.Call]*slot, window)
	next := base
	issue := func(s *slot) {
		if !p.take() {
			return
		}
		s.start = time.Now()
		var call *rpc.Call
		if isAdd {
			s.i = next
			next++
			s.args = AddArgs{A: s.i, B: 1}
			s.sum = 0
			call = c.Go("Bench.Add", &s.args, &s.sum, done)
		} else {
			s.echo = nil
			call = c.Go("Bench.Echo", payload, &s.echo, done)
		}
		pending[call] = s
	}
	for k := 0; k < window; k++ {
		issue(&slot{})
	}
	// net/rpc has no per-call deadline: a connection whose calls all stay unanswered for
	// callTimeout is given up (its pending calls count as failed), as the Python peers'
	// calls time out after the same 10 s.
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	lastProgress := time.Now()
	for len(pending) > 0 {
		var call *rpc.Call
		select {
		case call = <-done:
		case <-tick.C:
			if time.Since(lastProgress) > callTimeout {
				for range pending {
					p.fail(fmt.Sprintf("no reply within %v", callTimeout))
				}
				return res
			}
			continue
		}
		now := time.Now()
		lastProgress = now
		s := pending[call]
		delete(pending, call)
		switch {
		case call.Error != nil:
			p.fail(fmt.Sprintf("%s: %v", call.ServiceMethod, call.Error))
		case isAdd && s.sum != s.i+1:
			p.fail(fmt.Sprintf("Bench.Add(%d, 1) returned %d", s.i, s.sum))
		case !isAdd && !bytes.Equal(s.echo, payload):
			p.fail(fmt.Sprintf("Bench.Echo of %d bytes returned %d different bytes", len(payload), len(s.echo)))
		default:
			if record {
				res.lat = append(res.lat, now.Sub(s.start).Nanoseconds())
				res.last = now
			}
		}
		issue(s)
	}
	return res
}

// runPhase drives every connection until the phase ends.
func runPhase(clients []*rpc.Client, window int, p *phase, isAdd bool, payload []byte, record bool) []connResult {
	out := make([]connResult, len(clients))
	var wg sync.WaitGroup
	for k, c := range clients {
		wg.Add(1)
		go func(k int, c *rpc.Client) {
			defer wg.Done()
			out[k] = drive(c, window, p, isAdd, payload, record, int64(k)<<40)
		}(k, c)
	}
	wg.Wait()
	return out
}

func dial(address, codec string) (*rpc.Client, error) {
	conn, err := net.DialTimeout("tcp", address, connectTimeout)
	if err != nil {
		return nil, err
	}
	var c *rpc.Client
	if codec == "gob" {
		c = rpc.NewClient(conn)
	} else {
		c = jsonrpc.NewClient(conn)
	}
	var sum int64
	call := c.Go("Bench.Add", &AddArgs{A: 0, B: 0}, &sum, make(chan *rpc.Call, 1))
	select {
	case <-call.Done:
		if call.Error != nil {
			c.Close()
			return nil, call.Error
		}
	case <-time.After(connectTimeout):
		c.Close()
		return nil, fmt.Errorf("first call did not answer within %v", connectTimeout)
	}
	return c, nil
}

func main() {
	codec := flag.String("codec", "gob", "wire codec: gob (net/rpc) or json (net/rpc/jsonrpc)")
	address := flag.String("address", "", "HOST:PORT printed by the server's READY line")
	workload := flag.String("workload", "", "seq, pipelined, payload or fanin")
	duration := flag.Float64("duration", 0, "measured seconds (after warm-up)")
	inflight := flag.Int("inflight", 0, "calls in flight per connection (pipelined: 64, fanin: 16)")
	connections := flag.Int("connections", 8, "connections for fanin")
	payloadSize := flag.Int("payload-size", 65536, "bytes echoed one way by the payload workload")
	maxCalls := flag.Int64("max-calls", 2000000, "stop after this many measured calls")
	flag.Parse()

	system := "go-netrpc-" + *codec
	if *codec == "json" {
		system = "go-netrpc-jsonrpc"
	}
	res := Result{System: system, Workload: *workload, Codec: *codec, GoMaxProcs: runtime.GOMAXPROCS(0)}
	fatal := func(msg string) {
		res.Error = strp(msg)
		emit(res)
		os.Exit(0)
	}
	if *codec != "gob" && *codec != "json" {
		fatal(fmt.Sprintf("unknown -codec %q (want gob or json)", *codec))
	}
	if *address == "" || *duration <= 0 {
		fatal("--address and a positive --duration are required")
	}
	if *inflight < 0 || *connections < 1 || *payloadSize < 0 || *maxCalls < 1 {
		fatal("--inflight, --connections, --payload-size and --max-calls must be positive")
	}

	conns, window := 1, 1
	switch *workload {
	case "seq", "payload":
	case "pipelined":
		window = 64
	case "fanin":
		conns, window = *connections, 16
	default:
		fatal(fmt.Sprintf("unknown --workload %q (want seq, pipelined, payload or fanin)", *workload))
	}
	if *inflight > 0 && (*workload == "pipelined" || *workload == "fanin") {
		window = *inflight
	}
	isAdd := *workload != "payload"
	var payload []byte
	if !isAdd {
		res.PayloadBytes = *payloadSize
		payload = make([]byte, *payloadSize)
		if _, err := rand.Read(payload); err != nil {
			fatal("cannot make a random payload: " + err.Error())
		}
	}

	limit := time.Duration(*duration*float64(time.Second)) + watchdogGrace
	base := res // the watchdog reports from its own copy: main keeps filling res
	time.AfterFunc(limit, func() {
		base.Error = strp(fmt.Sprintf("client did not finish within %.1fs (duration + %.0fs); aborted by the watchdog",
			limit.Seconds(), watchdogGrace.Seconds()))
		emit(base)
		os.Exit(0)
	})

	clients := make([]*rpc.Client, conns)
	errs := make([]error, conns)
	var wg sync.WaitGroup
	for k := range clients {
		wg.Add(1)
		go func(k int) {
			defer wg.Done()
			clients[k], errs[k] = dial(*address, *codec)
		}(k)
	}
	wg.Wait()
	for k, err := range errs {
		if err != nil {
			fatal(fmt.Sprintf("connection %d of %d to %s failed: %v", k+1, conns, *address, err))
		}
	}

	warmMax := int64(warmupCalls)
	if n := int64(conns * window); n > warmMax {
		warmMax = n
	}
	warm := newPhase(warmupSeconds, warmMax)
	runPhase(clients, window, warm, isAdd, payload, false)
	if atomic.LoadInt32(&warm.stopped) != 0 {
		fatal(fmt.Sprintf("warm-up aborted after %d failed calls; first: %s", warm.errorCount(), warm.first()))
	}

	res.WarmupCalls = atomic.LoadInt64(&warm.started)
	if res.WarmupCalls > warm.maxCalls {
		res.WarmupCalls = warm.maxCalls
	}
	run := newPhase(*duration, *maxCalls)
	results := runPhase(clients, window, run, isAdd, payload, true)
	for _, c := range clients {
		c.Close()
	}

	var lat []int64
	var last time.Time
	for _, r := range results {
		lat = append(lat, r.lat...)
		if r.last.After(last) {
			last = r.last
		}
	}
	sort.Slice(lat, func(a, b int) bool { return lat[a] < lat[b] })
	res.Calls = len(lat)
	res.Errors = run.errorCount()
	if res.Calls > 0 {
		elapsed := last.Sub(run.start).Seconds()
		res.ElapsedS = jfloat(math.Round(elapsed*1e6) / 1e6)
		res.CallsPerS = jfloat(round1(float64(res.Calls) / elapsed))
		res.P50us = jfloat(round1(percentileUs(lat, 0.50)))
		res.P99us = jfloat(round1(percentileUs(lat, 0.99)))
	}
	switch {
	case atomic.LoadInt32(&run.stopped) != 0:
		res.Error = strp(fmt.Sprintf("aborted after %d failed calls; first: %s", res.Errors, run.first()))
	case res.Calls == 0 && res.Errors > 0:
		res.Error = strp("no call succeeded; first failure: " + run.first())
	case res.Calls == 0:
		res.Error = strp("no call completed")
	case res.Errors > 0:
		res.Note = strp("first failed call: " + run.first())
	}
	emit(res)
	os.Exit(0)
}
