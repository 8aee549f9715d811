package bench

import (
	"context"
	"time"

	pb "github.com/startgate/startgate/proto/startgate/v1"
)

// GateSample is startgated's gate as Status showed it during a burst: what
// the controller did with the pressure it saw. For tuning; the JSON output
// carries every sample, the progress line a summary.
type GateSample struct {
	At       time.Duration `json:"at_ns"` // since the burst's start
	InFlight int32         `json:"in_flight"`
	Limit    int32         `json:"limit"`
	Rate     float64       `json:"rate"`
	Queued   int32         `json:"queued"`
	CPU      float64       `json:"cpu"` // smoothed "some" stall fractions
	IO       float64       `json:"io"`
}

// gateSampleEvery is the Status poll's period during a startgate burst.
const gateSampleEvery = 250 * time.Millisecond

// WatchGate polls Status until ctx ends and returns the samples. A failed
// call is skipped: the samples are for the reader, not the result.
func WatchGate(ctx context.Context, api pb.StartgateClient, start time.Time) []GateSample {
	var out []GateSample
	tick := time.NewTicker(gateSampleEvery)
	defer tick.Stop()
	for {
		st, err := api.Status(ctx, &pb.StatusRequest{})
		if err == nil {
			out = append(out, GateSample{
				At: time.Since(start), InFlight: st.GetInFlight(), Limit: st.GetInFlightLimit(), Rate: st.GetRate(),
				Queued: st.GetQueueLength(), CPU: st.GetPressure().GetCpu().GetSmoothed(), IO: st.GetPressure().GetIo().GetSmoothed(),
			})
		}
		select {
		case <-ctx.Done():
			return out
		case <-tick.C:
		}
	}
}

// gateSummary is the in-flight limit at the burst's start, its mean and
// its maximum over the samples.
func gateSummary(s []GateSample) (first int32, mean float64, maxLimit int32) {
	if len(s) == 0 {
		return 0, 0, 0
	}
	var sum int64
	for _, g := range s {
		sum += int64(g.Limit)
		maxLimit = max(maxLimit, g.Limit)
	}
	return s[0].Limit, float64(sum) / float64(len(s)), maxLimit
}
