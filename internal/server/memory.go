package server

import (
	"runtime/metrics"
	"sync"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// The daemon sheds load before the kernel has to kill it: past
// Limits.MemoryHigh of heap and goroutine stacks, new streams and waiters
// of every caller but root are refused (ResourceExhausted naming
// daemon.memory_high) until the figure falls back. The per-caller caps
// bound one uid; this bounds the sum over uids, which the caps alone do
// not (every uid on the node may open its own). What is open is never cut,
// and the CRI proxy is not shed: kubelet's calls are bounded by its pods,
// and refusing them would make the gate the reason a pod cannot start.
//
// Why not a cgroup limit (systemd's MemoryMax or MemoryHigh) instead: at
// MemoryMax the kernel kills the daemon inside its cgroup, the very thing
// OOMScoreAdjust=-999 avoids, and at MemoryHigh it throttles the daemon by
// reclaim, which slows every pod start on the node. Here the daemon says
// no to the newcomer and keeps serving what it holds.

// memoryGuard reads the daemon's heap and stacks at most every
// memoryEvery and says whether they are over the limit.
type memoryGuard struct {
	high int64        // bytes; 0 is off
	read func() int64 // runtimeMemory; tests replace it
	log  *zap.Logger

	mu sync.Mutex
	// Guarded by mu.
	at       time.Time
	last     int64
	shedding bool
}

const memoryEvery = 100 * time.Millisecond

func newMemoryGuard(high int64, log *zap.Logger) *memoryGuard {
	return &memoryGuard{high: high, read: runtimeMemory, log: log}
}

// check returns nil under the limit, else the ResourceExhausted error a
// new stream or waiter gets. It logs each change between the two, so the
// journal shows when shedding began and ended.
func (m *memoryGuard) check() error {
	if m == nil || m.high <= 0 {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if now := time.Now(); now.Sub(m.at) >= memoryEvery {
		m.at, m.last = now, m.read()
		if over := m.last > m.high; over != m.shedding {
			m.shedding = over
			if over {
				m.log.Warn("over daemon.memory_high: refusing new streams and waiters of every caller but root until memory falls",
					zap.Int64("bytes", m.last), zap.Int64("memory_high", m.high))
			} else {
				m.log.Info("back under daemon.memory_high: accepting new streams and waiters again",
					zap.Int64("bytes", m.last), zap.Int64("memory_high", m.high))
			}
		}
	}
	if !m.shedding {
		return nil
	}
	return status.Errorf(codes.ResourceExhausted,
		"server: startgated holds %d MiB of heap and stacks, over daemon.memory_high (%d MiB): new streams and waiters are refused until it falls",
		m.last>>20, m.high>>20)
}

// runtimeMemory is the Go heap's objects (live, and dead not yet swept:
// an upper bound that the next GC brings down) plus goroutine stacks,
// which grow with every open stream. runtime/metrics reads them without
// stopping the world.
func runtimeMemory() int64 {
	s := []metrics.Sample{
		{Name: "/memory/classes/heap/objects:bytes"},
		{Name: "/memory/classes/heap/stacks:bytes"},
	}
	metrics.Read(s)
	var n int64
	for _, v := range s {
		if v.Value.Kind() == metrics.KindUint64 {
			n += int64(v.Value.Uint64())
		}
	}
	return n
}
