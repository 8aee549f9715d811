package e2e

// Prefetch benchmarks (issue 4, "Benchmarks"), through the real startgated
// in front of the testbed containerd and a loopback docker-registry:
//
//	go test -run '^$' -bench Prefetch -benchtime 1x -count 3 ./e2e/
//
// Figures are medians over the samples of a run, in milliseconds
// (b.ReportMetric); every sample is logged too (-v).

import (
	"context"
	"slices"
	"testing"
	"time"
)

// benchLayerSize is the "50 MB changed layer".
const benchLayerSize = 50 << 20

// BenchmarkPrefetchPushToDone: from the registry's push notification to
// the prefetch done, for a patch whose changed layer is 50 MB. The start
// is when the notification reached startgated (the relay's clock), the
// end when startgated marked the entry done (its own clock, the entry's
// updated time in prefetch ls), so polling adds nothing. pushed-to-done
// starts when the push (upload) returned instead, just before the
// registry sends the notification. It runs with prefetch.bandwidth at its
// default (100 MiB/s: about half a second of a 50 MB layer's time) and
// unlimited ("0").
func BenchmarkPrefetchPushToDone(b *testing.B) {
	for _, bw := range []struct{ name, value string }{{"bandwidth=default", ""}, {"bandwidth=unlimited", "0"}} {
		b.Run(bw.name, func(b *testing.B) { benchPushToDone(b, bw.value) })
	}
}

func benchPushToDone(b *testing.B, bandwidth string) {
	const samples = 3
	pn := startPrefetchNode(b, prefetchOptions{notifications: true, bandwidth: bandwidth})
	ctx := context.Background()
	ref := pn.front.Ref("app:1")
	base, _ := appImage(b, benchLayerSize, 1)
	pn.push(ctx, "app:1", base)
	pn.pull(ctx, ref)
	var fromNotify, fromPush []time.Duration
	var mbps []float64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for s := range samples {
			b.StopTimer()
			patched, _ := patchOf(b, base, benchLayerSize, uint64(100+i*samples+s))
			b.StartTimer()
			d := pn.push(ctx, "app:1", patched)
			pushed := time.Now()
			var notified time.Time
			pn.eventually(30*time.Second, "the notification of "+d, func() (bool, string) {
				at, ok := pn.relay.delivered(d)
				notified = at
				return ok, pn.relay.String()
			})
			e := pn.waitEntry(ref, 2*time.Minute, "done with "+d, func(e prefetchEntry) bool {
				return e.NewDigest == d && (e.State == "done" || e.State == "failed")
			})
			if e.State != "done" || e.LayersFetched != 1 {
				b.Fatalf("prefetch of %s: %v, want done with 1 layer", d, e)
			}
			took := e.Updated.Sub(notified)
			fromNotify = append(fromNotify, took)
			fromPush = append(fromPush, e.Updated.Sub(pushed))
			mbps = append(mbps, float64(e.BytesDone)/1e6/took.Seconds())
			b.Logf("sample %d: notification to done %v, push returned to done %v, %d bytes (%.0f MB/s)",
				len(fromNotify), took, e.Updated.Sub(pushed), e.BytesDone, mbps[len(mbps)-1])
		}
	}
	b.StopTimer()
	b.ReportMetric(ms(median(fromNotify)), "notify-to-done-ms")
	b.ReportMetric(ms(median(fromPush)), "pushed-to-done-ms")
	b.ReportMetric(medianF(mbps), "MB/s")
}

// BenchmarkPrefetchPullImage: kubelet's PullImage of a patched tag (a 50
// MB changed layer) through startgated, with and without prefetch, side
// by side on one node: repository warm is watched (the patch is
// prefetched before the pull), repository cold is removed from the watch
// (startgatectl prefetch rm), so its patch is pulled from the registry.
// Samples alternate between the two, the order flipped every sample; each
// sample is a new patch. The bytes each pull read from the registry are
// reported too.
func BenchmarkPrefetchPullImage(b *testing.B) {
	const samples = 5
	pn := startPrefetchNode(b, prefetchOptions{notifications: true})
	ctx := context.Background()
	warmRef, coldRef := pn.front.Ref("warm:1"), pn.front.Ref("cold:1")
	warmBase, _ := appImage(b, benchLayerSize, 1)
	coldBase, _ := appImage(b, benchLayerSize, 2)
	pn.push(ctx, "warm:1", warmBase)
	pn.push(ctx, "cold:1", coldBase)
	pn.pull(ctx, warmRef)
	pn.pull(ctx, coldRef)
	pn.ctl("prefetch", "rm", coldRef)

	var warm, cold []time.Duration
	var warmBytes, coldBytes []float64
	pullWarm := func(seed uint64) {
		b.StopTimer()
		patched, _ := patchOf(b, warmBase, benchLayerSize, seed)
		d := pn.push(ctx, "warm:1", patched)
		e := pn.waitEntry(warmRef, 2*time.Minute, "done with "+d, func(e prefetchEntry) bool {
			return e.NewDigest == d && (e.State == "done" || e.State == "failed")
		})
		if e.State != "done" {
			b.Fatalf("prefetch of %s: %v", d, e)
		}
		pn.front.Take()
		b.StartTimer()
		t0 := time.Now()
		pn.pull(ctx, warmRef)
		warm = append(warm, time.Since(t0))
		warmBytes = append(warmBytes, float64(total(pn.front.Take())))
	}
	pullCold := func(seed uint64) {
		b.StopTimer()
		patched, changed := patchOf(b, coldBase, benchLayerSize, seed)
		d := pn.push(ctx, "cold:1", patched)
		if e, ok := pn.prefetchEntry(coldRef); ok {
			b.Fatalf("cold:1 is watched after prefetch rm: %v", e)
		}
		pn.front.Take()
		b.StartTimer()
		t0 := time.Now()
		pn.pull(ctx, coldRef)
		cold = append(cold, time.Since(t0))
		served := pn.front.Take()
		coldBytes = append(coldBytes, float64(total(served)))
		if served[digestOf(b, changed)] != sizeOf(b, changed) {
			b.Fatalf("cold pull of %s: the registry served %v, want the changed layer whole", d, served)
		}
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for s := range samples {
			seed := uint64(100 + 2*(i*samples+s))
			if s%2 == 0 {
				pullWarm(seed)
				pullCold(seed + 1)
			} else {
				pullCold(seed + 1)
				pullWarm(seed)
			}
			b.Logf("sample %d: PullImage prefetched %v (%.0f blob bytes served), not prefetched %v (%.0f)",
				len(warm), warm[len(warm)-1], warmBytes[len(warmBytes)-1], cold[len(cold)-1], coldBytes[len(coldBytes)-1])
		}
	}
	b.StopTimer()
	b.ReportMetric(ms(median(warm)), "pull-prefetched-ms")
	b.ReportMetric(ms(median(cold)), "pull-cold-ms")
	b.ReportMetric(medianF(warmBytes)/1e6, "prefetched-MB-served")
	b.ReportMetric(medianF(coldBytes)/1e6, "cold-MB-served")
}

func total(m map[string]int64) int64 {
	var n int64
	for _, v := range m {
		n += v
	}
	return n
}

func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func medianF(fs []float64) float64 {
	if len(fs) == 0 {
		return 0
	}
	s := slices.Clone(fs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
