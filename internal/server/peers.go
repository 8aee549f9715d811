package server

import (
	"fmt"
	"net"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Limits bound what one caller, and all callers together, may hold open:
// every connection, stream and waiting slot costs the daemon memory and the
// gate work, and a user who may only read (Watch) must not be able to grow
// either without bound or slow the grants of everyone else. A caller is a
// uid (the kernel's SO_PEERCRED). Zero fields take DefaultLimits'.
type Limits struct {
	// ConnectionsPerPeer caps a uid's open connections.
	ConnectionsPerPeer int
	// StreamsPerPeer caps a uid's open streams (Watch, Acquire,
	// AcquireMany); Streams caps them all together, root's aside, so that
	// an operator can always reach a daemon others have filled.
	StreamsPerPeer int
	Streams        int
	// WaitersPerPeer caps a uid's slots asked for and not yet ended, over
	// all its Acquire and AcquireMany streams (the gate's max_queue caps
	// the waiters of all callers together).
	WaitersPerPeer int
}

// DefaultLimits are generous for every client the project has
// (startgatectl, hold wrappers, a node agent) and small enough that a
// daemon at every cap stays within tens of megabytes.
func DefaultLimits() Limits {
	return Limits{ConnectionsPerPeer: 128, StreamsPerPeer: 128, Streams: 1024, WaitersPerPeer: 5000}
}

func (l Limits) withDefaults() Limits {
	d := DefaultLimits()
	if l.ConnectionsPerPeer <= 0 {
		l.ConnectionsPerPeer = d.ConnectionsPerPeer
	}
	if l.StreamsPerPeer <= 0 {
		l.StreamsPerPeer = d.StreamsPerPeer
	}
	if l.Streams <= 0 {
		l.Streams = d.Streams
	}
	if l.WaitersPerPeer <= 0 {
		l.WaitersPerPeer = d.WaitersPerPeer
	}
	return l
}

// peers counts what each uid holds open against Limits.
type peers struct {
	limits Limits
	mu     sync.Mutex
	// Guarded by mu.
	conns, streams, waiters map[uint32]int
	allStreams              int // of uids other than root
}

func newPeers(l Limits) *peers {
	return &peers{limits: l.withDefaults(), conns: map[uint32]int{}, streams: map[uint32]int{}, waiters: map[uint32]int{}}
}

// exhausted is the error of a call over a cap: ResourceExhausted, naming
// the cap, its config key and the caller.
func exhausted(what string, uid uint32, n int, key string) error {
	return status.Errorf(codes.ResourceExhausted, "server: uid %d has %d %s open, the most allowed (daemon.%s)", uid, n, what, key)
}

// stream takes a stream for uid; the func gives it back.
func (p *peers) stream(uid uint32) (func(), error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if n := p.streams[uid]; n >= p.limits.StreamsPerPeer {
		return nil, exhausted("streams", uid, n, "max_streams_per_peer")
	}
	if uid != 0 && p.allStreams >= p.limits.Streams {
		return nil, status.Errorf(codes.ResourceExhausted, "server: %d streams open, the most allowed (daemon.max_streams)", p.allStreams)
	}
	p.streams[uid]++
	if uid != 0 {
		p.allStreams++
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			p.mu.Lock()
			defer p.mu.Unlock()
			dec(p.streams, uid)
			if uid != 0 {
				p.allStreams--
			}
		})
	}, nil
}

// waiter takes a waiter for uid; the func gives it back.
func (p *peers) waiter(uid uint32) (func(), error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if n := p.waiters[uid]; n >= p.limits.WaitersPerPeer {
		return nil, exhausted("slots asked for", uid, n, "max_waiters_per_peer")
	}
	p.waiters[uid]++
	var once sync.Once
	return func() {
		once.Do(func() {
			p.mu.Lock()
			defer p.mu.Unlock()
			dec(p.waiters, uid)
		})
	}, nil
}

// conn takes a connection for uid; the func gives it back.
func (p *peers) conn(uid uint32) (func(), error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if n := p.conns[uid]; n >= p.limits.ConnectionsPerPeer {
		return nil, fmt.Errorf("server: uid %d has %d connections open, the most allowed (daemon.max_connections_per_peer)", uid, n)
	}
	p.conns[uid]++
	var once sync.Once
	return func() {
		once.Do(func() {
			p.mu.Lock()
			defer p.mu.Unlock()
			dec(p.conns, uid)
		})
	}, nil
}

// dec decrements m[k], deleting it at zero so that the maps hold only the
// uids with something open.
func dec(m map[uint32]int, k uint32) {
	if m[k] <= 1 {
		delete(m, k)
		return
	}
	m[k]--
}

// countedConn gives its connection back to peers when closed.
type countedConn struct {
	net.Conn
	release func()
}

func (c *countedConn) Close() error {
	err := c.Conn.Close()
	c.release()
	return err
}
