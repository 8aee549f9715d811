package server

import (
	"fmt"
	"net"
	"sync"

	"go.uber.org/zap"
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
	// MemoryHigh sheds load: past this many bytes of heap and goroutine
	// stacks, new streams and waiters of every caller but root are
	// refused until the daemon's memory falls back (memory.go). Zero is
	// off (DefaultLimits sets it).
	MemoryHigh int64
}

// DefaultLimits are generous for every client the project has
// (startgatectl, hold wrappers, a node agent) and small enough that a
// daemon at every cap stays within tens of megabytes.
func DefaultLimits() Limits {
	return Limits{ConnectionsPerPeer: 128, StreamsPerPeer: 128, Streams: 1024, WaitersPerPeer: 5000, MemoryHigh: 512 << 20}
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
	mem    *memoryGuard
	mu     sync.Mutex
	// Guarded by mu.
	conns, streams, waiters map[uint32]int
	allStreams              int // of uids other than root
}

// newPeers counts against l; MemoryHigh is taken as given (zero is off).
func newPeers(l Limits, log *zap.Logger) *peers {
	return &peers{limits: l.withDefaults(), mem: newMemoryGuard(l.MemoryHigh, log),
		conns: map[uint32]int{}, streams: map[uint32]int{}, waiters: map[uint32]int{}}
}

// exhausted is the error of a call over a cap: ResourceExhausted, naming
// the cap, its config key and the caller.
func exhausted(what string, uid uint32, n int, key string) error {
	return status.Errorf(codes.ResourceExhausted, "server: uid %d has %d %s open, the most allowed (daemon.%s)", uid, n, what, key)
}

// stream takes a stream for uid; the func gives it back.
func (p *peers) stream(uid uint32) (func(), error) {
	if err := p.shed(uid); err != nil {
		return nil, err
	}
	return p.take(p.streams, uid, p.limits.StreamsPerPeer, true, func(n int) error {
		return exhausted("streams", uid, n, "max_streams_per_peer")
	})
}

// waiter takes a waiter for uid; the func gives it back.
func (p *peers) waiter(uid uint32) (func(), error) {
	if err := p.shed(uid); err != nil {
		return nil, err
	}
	return p.take(p.waiters, uid, p.limits.WaitersPerPeer, false, func(n int) error {
		return exhausted("slots asked for", uid, n, "max_waiters_per_peer")
	})
}

// shed refuses a new stream or waiter of any uid but root while the
// daemon is over Limits.MemoryHigh.
func (p *peers) shed(uid uint32) error {
	if uid == 0 {
		return nil
	}
	return p.mem.check()
}

// conn takes a connection for uid; the func gives it back. Its error is a
// plain one: it fails a handshake, which has no gRPC status.
func (p *peers) conn(uid uint32) (func(), error) {
	return p.take(p.conns, uid, p.limits.ConnectionsPerPeer, false, func(n int) error {
		return fmt.Errorf("server: uid %d has %d connections open, the most allowed (daemon.max_connections_per_peer)", uid, n)
	})
}

// take counts one more of m's kind for uid unless it holds perPeer
// already (over: the error naming the cap); with all (streams) it also
// counts against Limits.Streams, for every uid but root. The func gives
// it back, once however often it is called.
func (p *peers) take(m map[uint32]int, uid uint32, perPeer int, all bool, over func(n int) error) (func(), error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if n := m[uid]; n >= perPeer {
		return nil, over(n)
	}
	total := all && uid != 0
	if total && p.allStreams >= p.limits.Streams {
		return nil, status.Errorf(codes.ResourceExhausted, "server: %d streams open, the most allowed (daemon.max_streams)", p.allStreams)
	}
	m[uid]++
	if total {
		p.allStreams++
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			p.mu.Lock()
			defer p.mu.Unlock()
			dec(m, uid)
			if total {
				p.allStreams--
			}
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
