// Command server is the Go net/rpc peer of the fastrpc cross-library benchmark.
//
// It serves Bench.Add(a, b) -> a + b and Bench.Echo(data) -> data with the standard library's
// net/rpc, encoded either with gob (net/rpc's own codec) or with JSON-RPC 1.0
// (net/rpc/jsonrpc):
//
//	server -codec gob|json --port 0
//
// It binds 127.0.0.1 (port 0: an ephemeral port), prints exactly one line
// "READY 127.0.0.1:<port>" on stdout once it accepts connections, and serves until it gets
// SIGTERM (or SIGINT) or its standard input reaches end-of-file; it then exits with code 0.
// Logs go to stderr.
package main

import (
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/rpc"
	"net/rpc/jsonrpc"
	"os"
	"os/signal"
	"sync"
	"syscall"
)

// AddArgs are the arguments of Bench.Add.
type AddArgs struct {
	A, B int64
}

// Bench is the benchmark service.
type Bench struct{}

// Add returns a + b.
func (*Bench) Add(args *AddArgs, reply *int64) error {
	*reply = args.A + args.B
	return nil
}

// Echo returns its argument unchanged.
func (*Bench) Echo(data []byte, reply *[]byte) error {
	*reply = data
	return nil
}

func main() {
	log.SetOutput(os.Stderr)
	log.SetPrefix("go-netrpc server: ")
	codec := flag.String("codec", "gob", "wire codec: gob (net/rpc) or json (net/rpc/jsonrpc)")
	port := flag.Int("port", 0, "TCP port on 127.0.0.1 (0: ephemeral)")
	flag.Parse()
	if *codec != "gob" && *codec != "json" {
		fmt.Fprintf(os.Stderr, "unknown -codec %q (want gob or json)\n", *codec)
		os.Exit(2)
	}

	srv := rpc.NewServer()
	if err := srv.RegisterName("Bench", new(Bench)); err != nil {
		log.Fatalf("register: %v", err)
	}
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", *port))
	if err != nil {
		log.Fatalf("listen: %v", err)
	}

	stop := make(chan struct{})
	var once sync.Once
	stopNow := func() { once.Do(func() { close(stop) }) }

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-sigs
		stopNow()
	}()
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin) // returns at EOF (or on a read error)
		stopNow()
	}()

	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				select {
				case <-stop:
				default:
					log.Printf("accept: %v", err)
				}
				return
			}
			if *codec == "gob" {
				go srv.ServeConn(conn)
			} else {
				go srv.ServeCodec(jsonrpc.NewServerCodec(conn))
			}
		}
	}()

	// os.Stdout is unbuffered: the line is out as soon as Printf returns.
	fmt.Printf("READY 127.0.0.1:%d\n", ln.Addr().(*net.TCPAddr).Port)

	<-stop
	_ = ln.Close()
	os.Exit(0)
}
