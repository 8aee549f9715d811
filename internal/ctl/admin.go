package ctl

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/startgate/startgate/proto/startgate/v1"
)

// simpleCommand is a mutating call with no output but a confirmation.
func (a *app) simpleCommand(use, short, done string, call func(cmd *cobra.Command, c pb.StartgateClient) error) *cobra.Command {
	return &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			if err := call(cmd, c); err != nil {
				return a.rpcError(err)
			}
			return a.confirm(done)
		},
	}
}

// confirm prints what happened: a word for people, an object for scripts.
func (a *app) confirm(what string) error {
	if a.output == "table" {
		_, err := fmt.Fprintln(a.streams.Out, what)
		return err
	}
	return emit(a.streams.Out, a.output, map[string]string{"result": what})
}

func (a *app) pauseCommand() *cobra.Command {
	return a.simpleCommand("pause", "Stop granting start slots (critical starts still pass)", "paused",
		func(cmd *cobra.Command, c pb.StartgateClient) error {
			ctx, cancel := a.callCtx(cmd.Context())
			defer cancel()
			_, err := c.Pause(ctx, &pb.PauseRequest{})
			return err
		})
}

func (a *app) resumeCommand() *cobra.Command {
	return a.simpleCommand("resume", "Resume granting after pause or drain", "resumed",
		func(cmd *cobra.Command, c pb.StartgateClient) error {
			ctx, cancel := a.callCtx(cmd.Context())
			defer cancel()
			_, err := c.Resume(ctx, &pb.ResumeRequest{})
			return err
		})
}

// drainTimeout is drain's deadline unless --timeout is given: draining
// waits for starts to finish, which takes longer than a status call.
const drainTimeout = 5 * time.Minute

func (a *app) drainCommand() *cobra.Command {
	cmd := a.simpleCommand("drain", "Pause and wait until no start slot is held (up to --timeout, default 5m)", "drained",
		func(cmd *cobra.Command, c pb.StartgateClient) error {
			timeout := a.timeout
			if !cmd.Flags().Changed("timeout") {
				timeout = drainTimeout
			}
			ctx, cancel := contextWithTimeout(cmd, timeout)
			defer cancel()
			_, err := c.Drain(ctx, &pb.DrainRequest{})
			return err
		})
	return cmd
}

func (a *app) releaseCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "release LEASE-ID",
		Short: "End a lease by ID, whoever holds it",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := strconv.ParseUint(args[0], 10, 64)
			if err != nil || id == 0 {
				return usagef("lease ID %q: want a positive integer", args[0])
			}
			if _, err := unary(a, cmd, pb.StartgateClient.Release, &pb.ReleaseRequest{LeaseId: id}); err != nil {
				return err
			}
			return a.confirm(fmt.Sprintf("released lease %d", id))
		},
	}
}

// floatFlag is one optional float field of SetPolicyRequest.
type floatFlag struct {
	name, usage string
	field       func(r *pb.SetPolicyRequest) **float64
	v           float64
}

func (a *app) setCommand() *cobra.Command {
	var (
		auto                      bool
		inflight, burst, maxQueue int32
		rate                      float64
		margin, aging, maxHold    time.Duration
		onDeadline                string
	)
	floats := []*floatFlag{
		{name: "cpu-target", usage: "CPU stall fraction (0..1] above which limits shrink",
			field: func(r *pb.SetPolicyRequest) **float64 { return &r.CpuTarget }},
		{name: "io-target", usage: "IO stall fraction (0..1] above which limits shrink",
			field: func(r *pb.SetPolicyRequest) **float64 { return &r.IoTarget }},
		{name: "memory-target", usage: "memory stall fraction (0..1] above which limits shrink",
			field: func(r *pb.SetPolicyRequest) **float64 { return &r.MemoryTarget }},
		{name: "min-inflight-per-core", usage: "floor of the in-flight limit per core",
			field: func(r *pb.SetPolicyRequest) **float64 { return &r.MinInFlightPerCore }},
		{name: "max-inflight-per-core", usage: "ceiling of the in-flight limit per core",
			field: func(r *pb.SetPolicyRequest) **float64 { return &r.MaxInFlightPerCore }},
		{name: "min-rate-per-core", usage: "floor of the rate per core",
			field: func(r *pb.SetPolicyRequest) **float64 { return &r.MinRatePerCore }},
		{name: "max-rate-per-core", usage: "ceiling of the rate per core",
			field: func(r *pb.SetPolicyRequest) **float64 { return &r.MaxRatePerCore }},
	}
	cmd := &cobra.Command{
		Use:   "set",
		Short: "Change the gate's policy at run time and print the result",
		Example: "  startgatectl set --inflight 4 --rate 10     # pin both limits\n" +
			"  startgatectl set --auto                      # let pressure size them again\n" +
			"  startgatectl set --cpu-target 0.6 --on-deadline refuse",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f := cmd.Flags()
			if onlyGlobal(cmd) {
				return usagef("set: nothing to change (see startgatectl set --help)")
			}
			set := f.Changed
			req := &pb.SetPolicyRequest{Auto: auto}
			if set("inflight") {
				req.InFlight = &inflight
			}
			if set("rate") {
				req.Rate = &rate
			}
			if set("burst") {
				req.Burst = &burst
			}
			if set("max-queue") {
				req.MaxQueue = &maxQueue
			}
			for _, ff := range floats {
				if set(ff.name) {
					v := ff.v
					*ff.field(req) = &v
				}
			}
			if set("deadline-margin") {
				req.DeadlineMargin = durationpb.New(margin)
			}
			if set("aging") {
				req.Aging = durationpb.New(aging)
			}
			if set("max-hold") {
				req.MaxHold = durationpb.New(maxHold)
			}
			if set("on-deadline") {
				switch onDeadline {
				case "admit":
					req.OnDeadline = pb.OnDeadline_ON_DEADLINE_ADMIT
				case "refuse":
					req.OnDeadline = pb.OnDeadline_ON_DEADLINE_REFUSE
				default:
					return usagef("--on-deadline %q: want admit or refuse", onDeadline)
				}
			}
			r, err := unary(a, cmd, pb.StartgateClient.SetPolicy, req)
			if err != nil {
				return err
			}
			p := policyOut(r.Policy)
			if a.output == "table" {
				tw := table(a.streams.Out)
				writePolicyRows(tw, p)
				return tw.Flush()
			}
			return emit(a.streams.Out, a.output, p)
		},
	}
	f := cmd.Flags()
	f.Int32Var(&inflight, "inflight", 0, "pin the in-flight limit (0 unpins it)")
	f.Float64Var(&rate, "rate", 0, "pin the token rate, starts per second (0 unpins it)")
	f.BoolVar(&auto, "auto", false, "unpin both limits: pressure sizes them")
	f.Int32Var(&burst, "burst", 0, "token bucket depth (0: one per core)")
	for _, ff := range floats {
		f.Float64Var(&ff.v, ff.name, 0, ff.usage)
	}
	f.DurationVar(&margin, "deadline-margin", 0, "admit (or refuse) a waiter whose deadline is this near")
	f.StringVar(&onDeadline, "on-deadline", "", "what to do with a waiter within the deadline margin: admit or refuse")
	f.DurationVar(&aging, "aging", 0, "promote a waiting class one step per this much waiting")
	f.DurationVar(&maxHold, "max-hold", 0, "default hold cap of a lease")
	f.Int32Var(&maxQueue, "max-queue", 0, "most waiters queued before new requests are refused")
	return cmd
}

// onlyGlobal reports whether no flag of the command itself was given.
func onlyGlobal(cmd *cobra.Command) bool {
	local := 0
	inherited := cmd.InheritedFlags()
	cmd.Flags().Visit(func(f *pflag.Flag) {
		if inherited.Lookup(f.Name) == nil {
			local++
		}
	})
	return local == 0
}

func contextWithTimeout(cmd *cobra.Command, d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(cmd.Context(), d)
}

func (a *app) bypassCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "bypass on|off",
		Short: "Turn the gate off (every start passes at once) or back on",
		Long: "bypass on turns the gate off by hand: every Acquire is granted at once and the CRI proxy passes\n" +
			"starts straight through to containerd, as it does by itself when admission fails. bypass off\n" +
			"puts the gate back in charge. Prints the state the daemon reports afterwards.",
		Example:   "  startgatectl bypass on\n  startgatectl bypass off -o json",
		ValidArgs: []string{"on", "off"},
		Args:      cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var on bool
			switch args[0] {
			case "on":
				on = true
			case "off":
			default:
				return usagef("bypass %q: want on or off", args[0])
			}
			st, err := unary(a, cmd, pb.StartgateClient.SetBypass, &pb.SetBypassRequest{On: on})
			if err != nil {
				return err
			}
			// The daemon's answer, not the request: what the gate is now.
			what := "bypass off"
			if st.Bypassed {
				what = "bypass on"
			}
			if a.output == "table" {
				_, err := fmt.Fprintln(a.streams.Out, what)
				return err
			}
			return emit(a.streams.Out, a.output, struct {
				Result   string `json:"result"`
				Bypassed bool   `json:"bypassed"`
			}{what, st.Bypassed})
		},
	}
}
