// Go peer for weft's network benchmarks ("echo" and "http" in
// bench/DEFINITIONS.md): the servers a Go programmer writes with the
// standard library, run on GOMAXPROCS=N, so weft's examples/echo_server and
// examples/http_hello compare one to one.
//
// Usage: peer-go-net echo|http [-h HOST] [-p PORT] [-w N]
//
//	echo  net.Listen, one goroutine per connection that reads up to 16 KiB
//	      and writes it all back, until the peer closes.
//	http  net/http serving "Hello, World!" (text/plain) on every path,
//	      HTTP/1.1 keep-alive, as net/http does by default.
//
// The worker count (GOMAXPROCS) comes from -w, else WEFT_WORKERS, else the
// number of CPUs this process may use. Port 0 picks a free port. Once the
// server listens it prints one line,
//
//	peer-go-net: listening on HOST:PORT gomaxprocs=N
//
// and then serves until killed.
//
// Build with the standard library only: GO111MODULE=off go build -o peer-go-net main.go
package main

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"runtime"
	"strconv"
)

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "peer-go-net: "+format+"\n", args...)
	os.Exit(1)
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: peer-go-net echo|http [-h HOST] [-p PORT] [-w N]")
	os.Exit(2)
}

// echoConn copies everything c sends back to it, then closes it. As
// weft's examples/echo_server.c: reads go into a 2 KiB buffer until one
// fills it, then into a 16 KiB one.
func echoConn(c net.Conn) {
	defer c.Close()
	buf := make([]byte, 2048)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			if _, werr := c.Write(buf[:n]); werr != nil {
				return
			}
			if n == len(buf) && len(buf) < 16384 {
				buf = make([]byte, 16384)
			}
		}
		if err != nil { // io.EOF when the peer closes
			return
		}
	}
}

func serveEcho(ln net.Listener) error {
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go echoConn(c)
	}
}

var hello = []byte("Hello, World!")

func serveHTTP(ln net.Listener) error {
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Type", "text/plain")
		h.Set("Content-Length", strconv.Itoa(len(hello)))
		w.Write(hello)
	})
	return (&http.Server{Handler: handler}).Serve(ln)
}

func main() {
	args := os.Args[1:]
	if len(args) < 1 {
		usage()
	}
	mode := args[0]
	if mode != "echo" && mode != "http" {
		usage()
	}
	host, port, workers := "127.0.0.1", 7007, 0
	for i := 1; i < len(args); i += 2 {
		if i+1 >= len(args) {
			usage()
		}
		v := args[i+1]
		var err error
		switch args[i] {
		case "-h":
			host = v
		case "-p":
			port, err = strconv.Atoi(v)
			if err != nil || port < 0 || port > 65535 {
				fail("-p must be a port number, not %q", v)
			}
		case "-w":
			workers, err = strconv.Atoi(v)
			if err != nil || workers < 1 {
				fail("-w must be a positive integer, not %q", v)
			}
		default:
			usage()
		}
	}
	if workers == 0 {
		if env := os.Getenv("WEFT_WORKERS"); env != "" {
			w, err := strconv.Atoi(env)
			if err != nil || w < 1 {
				fail("WEFT_WORKERS must be a positive integer, not %q", env)
			}
			workers = w
		} else {
			workers = runtime.NumCPU()
		}
	}
	runtime.GOMAXPROCS(workers)

	ln, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port)))
	if err != nil {
		fail("listen: %v", err)
	}
	fmt.Printf("peer-go-net: listening on %s:%d gomaxprocs=%d\n", host,
		ln.Addr().(*net.TCPAddr).Port, workers)
	os.Stdout.Sync()
	if mode == "echo" {
		err = serveEcho(ln)
	} else {
		err = serveHTTP(ln)
	}
	fail("%s: %v", mode, err)
}
