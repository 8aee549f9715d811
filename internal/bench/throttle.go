package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"

	"golang.org/x/time/rate"
)

// throttledProxy is a TCP proxy on a loopback port in front of the testbed
// registry; every byte from the registry to its clients (containerd's CRI
// pulls, startgated's prefetch) draws from one token bucket. It stands for
// the node's link to a remote registry: on loopback a 20 MiB layer moves
// in a fraction of a second, which hides what a prefetch saves. Pushes go
// to the registry directly, not through it: the pipeline's upload is not
// the node's download.
type throttledProxy struct {
	l      net.Listener
	target string
	lim    *rate.Limiter
	ctx    context.Context // ends at Close: pending waits and copies stop
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu struct {
		sync.Mutex
		conns map[net.Conn]struct{}
	}
}

// proxyChunk is the most bytes copied per token wait; the bucket's burst.
const proxyChunk = 64 << 10

// startThrottledProxy listens on 127.0.0.1 and forwards to target at most
// bytesPerSec bytes per second, downstream, over all connections.
func startThrottledProxy(target string, bytesPerSec float64) (*throttledProxy, error) {
	if bytesPerSec <= 0 {
		return nil, errors.New("bench: registry bandwidth must be positive")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("bench: registry proxy: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &throttledProxy{l: l, target: target, lim: rate.NewLimiter(rate.Limit(bytesPerSec), proxyChunk), ctx: ctx, cancel: cancel}
	p.mu.conns = map[net.Conn]struct{}{}
	p.wg.Add(1)
	go p.serve()
	return p, nil
}

// Host is the proxy's address, 127.0.0.1:PORT: a loopback host, so
// containerd and startgated speak plain HTTP to it.
func (p *throttledProxy) Host() string { return p.l.Addr().String() }

func (p *throttledProxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.l.Accept()
		if err != nil {
			return // closed
		}
		p.wg.Add(1)
		go p.handle(c)
	}
}

// track adds c to the open connections, or refuses it after Close.
func (p *throttledProxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ctx.Err() != nil {
		return false
	}
	p.mu.conns[c] = struct{}{}
	return true
}

func (p *throttledProxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.mu.conns, c)
	p.mu.Unlock()
	c.Close()
}

func (p *throttledProxy) handle(client net.Conn) {
	defer p.wg.Done()
	if !p.track(client) {
		client.Close()
		return
	}
	defer p.untrack(client)
	var d net.Dialer
	server, err := d.DialContext(p.ctx, "tcp", p.target)
	if err != nil {
		return
	}
	if !p.track(server) {
		server.Close()
		return
	}
	defer p.untrack(server)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = io.Copy(server, client)
		// The client is done sending: let the registry see EOF.
		if tc, ok := server.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
	}()
	p.copyThrottled(client, server)
	client.Close() // ends the other direction's copy too
	<-done
}

// copyThrottled copies src to dst, waiting for the bucket before each
// chunk.
func (p *throttledProxy) copyThrottled(dst io.Writer, src io.Reader) {
	buf := make([]byte, proxyChunk)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if p.lim.WaitN(p.ctx, n) != nil {
				return
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// Close stops accepting, closes every connection and waits for the
// proxy's goroutines.
func (p *throttledProxy) Close() error {
	p.cancel()
	err := p.l.Close()
	p.mu.Lock()
	for c := range p.mu.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
	return err
}
