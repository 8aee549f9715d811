package testbed

// Link: a registry that is far away (issue 10). On loopback a registry
// answers in microseconds and moves a 20 MiB layer in a fraction of a
// second, which hides both what a prefetch saves and what every pull's
// tag resolution costs. A Link is the node's link to a remote registry,
// emulated in user space: TCP forwarders on loopback ports, one per
// remote host (the registry, its token server), that share one
// bandwidth cap on the bytes coming back and delay every byte by half a
// round trip each way, a new connection by a whole one.
//
// Why user space and not tc netem: netem on lo would slow the API server,
// kubelet and containerd's own sockets too, and a veth pair in a network
// namespace needs kernel modules the new-machine root may not have. A
// forwarder delays what crosses it and nothing else.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// LinkOptions shape a Link. The zero value is loopback speed.
type LinkOptions struct {
	// Bandwidth caps the bytes per second from the remote hosts to the
	// node, over every connection of every forwarder together (a node's
	// share of a remote registry); 0 means no cap. Requests (node to
	// remote) are not capped: pushes and pulls' requests are small.
	Bandwidth float64
	// RTT is the round trip: each byte reaches the other side RTT/2
	// after it was sent, and a new connection's first bytes wait one
	// RTT more (the TCP handshake). 0 means none.
	RTT time.Duration
}

// linkChunk is the most bytes read, stamped and sent at once; the
// bandwidth bucket's burst.
const linkChunk = 64 << 10

// linkQueue bounds the chunks in flight per direction of a connection:
// 64 × 64 KiB, more than the bandwidth-delay product of any link this
// emulates (100 Mbit/s × 100 ms is 1.2 MiB), so it never throttles on
// its own.
const linkQueue = 64

// Link is a set of forwarders sharing one emulated link. Its methods are
// safe for concurrent use.
type Link struct {
	opts   LinkOptions
	lim    *rate.Limiter // nil: no cap
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu struct {
		sync.Mutex
		listeners []net.Listener
		conns     map[net.Conn]struct{}
	}
}

// NewLink returns a Link with no forwarders yet.
func NewLink(opts LinkOptions) (*Link, error) {
	if opts.Bandwidth < 0 || opts.RTT < 0 {
		return nil, fmt.Errorf("testbed: link: bandwidth %v and rtt %s must not be negative", opts.Bandwidth, opts.RTT)
	}
	ctx, cancel := context.WithCancel(context.Background())
	l := &Link{opts: opts, ctx: ctx, cancel: cancel}
	if opts.Bandwidth > 0 {
		l.lim = rate.NewLimiter(rate.Limit(opts.Bandwidth), linkChunk)
	}
	l.mu.conns = map[net.Conn]struct{}{}
	return l, nil
}

// Options are the link's shape.
func (l *Link) Options() LinkOptions { return l.opts }

// Forward listens on a new loopback port and forwards every connection to
// target (host:port) across the link; it returns 127.0.0.1:PORT. A
// loopback host, so containerd and startgated speak plain HTTP to it.
func (l *Link) Forward(target string) (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("testbed: link to %s: %w", target, err)
	}
	l.mu.Lock()
	if l.ctx.Err() != nil {
		l.mu.Unlock()
		ln.Close()
		return "", errors.New("testbed: link closed")
	}
	l.mu.listeners = append(l.mu.listeners, ln)
	l.mu.Unlock()
	l.wg.Add(1)
	go l.serve(ln, target)
	return ln.Addr().String(), nil
}

func (l *Link) serve(ln net.Listener, target string) {
	defer l.wg.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			return // closed
		}
		l.wg.Add(1)
		go l.handle(c, target)
	}
}

// track adds c to the open connections, or refuses it after Close.
func (l *Link) track(c net.Conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ctx.Err() != nil {
		return false
	}
	l.mu.conns[c] = struct{}{}
	return true
}

func (l *Link) untrack(c net.Conn) {
	l.mu.Lock()
	delete(l.mu.conns, c)
	l.mu.Unlock()
	c.Close()
}

func (l *Link) handle(client net.Conn, target string) {
	defer l.wg.Done()
	if !l.track(client) {
		client.Close()
		return
	}
	defer l.untrack(client)
	// The handshake: nothing crosses until a round trip has passed. The
	// client's first bytes wait in its socket buffer meanwhile.
	if !l.sleep(l.opts.RTT) {
		return
	}
	var d net.Dialer
	server, err := d.DialContext(l.ctx, "tcp", target)
	if err != nil {
		return
	}
	if !l.track(server) {
		server.Close()
		return
	}
	defer l.untrack(server)
	done := make(chan struct{})
	go func() {
		defer close(done)
		l.pipe(server, client, false)
	}()
	l.pipe(client, server, true)
	// Either direction's end ends the connection: close both, which
	// stops the other pipe.
	client.Close()
	server.Close()
	<-done
}

// sleep waits d or until the link closes; false if it closed.
func (l *Link) sleep(d time.Duration) bool {
	if d <= 0 {
		return l.ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-l.ctx.Done():
		return false
	}
}

// chunk is bytes read from one side, due at the other at due; nil b is
// the reader's end (EOF or error).
type chunk struct {
	b   []byte
	due time.Time
}

// pipe copies src to dst, each chunk delivered RTT/2 after it was read;
// down (remote to node) draws each chunk from the bandwidth bucket
// first. At src's EOF, dst's write side is closed, after the same delay,
// so the far end sees the EOF too, and pipe returns. On a write error or
// the link's close it closes both ends, which ends the other direction
// too.
func (l *Link) pipe(dst, src net.Conn, down bool) {
	half := l.opts.RTT / 2
	q := make(chan chunk, linkQueue)
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		defer close(q)
		for {
			buf := make([]byte, linkChunk)
			n, err := src.Read(buf)
			if n > 0 {
				if down && l.lim != nil && l.lim.WaitN(l.ctx, n) != nil {
					return
				}
				select {
				case q <- chunk{b: buf[:n], due: time.Now().Add(half)}:
				case <-l.ctx.Done():
					return
				}
			}
			if err != nil {
				select {
				case q <- chunk{due: time.Now().Add(half)}:
				case <-l.ctx.Done():
				}
				return
			}
		}
	}()
	for c := range q {
		if !l.sleep(time.Until(c.due)) {
			break
		}
		if c.b == nil {
			if cw, ok := dst.(interface{ CloseWrite() error }); ok && cw.CloseWrite() == nil {
				<-readerDone
				return
			}
			break
		}
		if _, err := dst.Write(c.b); err != nil {
			break
		}
	}
	// Broken or closed: end the connection, then the reader.
	src.Close()
	dst.Close()
	for range q {
	}
	<-readerDone
}

// Close stops every forwarder, closes every connection and waits for the
// link's goroutines.
func (l *Link) Close() error {
	l.mu.Lock()
	l.cancel()
	var errs []error
	for _, ln := range l.mu.listeners {
		errs = append(errs, ln.Close())
	}
	for c := range l.mu.conns {
		c.Close()
	}
	l.mu.Unlock()
	l.wg.Wait()
	return errors.Join(errs...)
}

var _ io.Closer = (*Link)(nil)
