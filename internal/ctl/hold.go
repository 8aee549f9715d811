package ctl

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	grpcstatus "google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/startgate/startgate/internal/admission"
	pb "github.com/startgate/startgate/proto/startgate/v1"
)

const maxDescription = 1024 // the server's limit

func (a *app) holdCommand() *cobra.Command {
	var (
		class, tenant, desc string
		hold                time.Duration
		verbose, failOpen   bool
	)
	cmd := &cobra.Command{
		Use:   "hold [flags] -- COMMAND [ARGS...]",
		Short: "Run a command while holding a start slot; exit with its exit code",
		Long: "hold waits for a start slot, runs COMMAND with this process's standard streams, and gives the slot\n" +
			"back when COMMAND exits. SIGINT and SIGTERM are forwarded to COMMAND. If the slot's hold cap passes\n" +
			"first, hold warns and COMMAND runs on without a slot.\n\n" +
			"If startgated is not there (the socket does not exist, or nothing listens on it) or is shutting\n" +
			"down, hold warns and runs COMMAND without a slot (the gate must never be why a start fails);\n" +
			"--fail-open=false makes it exit 1 instead. Any other failure (permission denied, a path that is\n" +
			"not a socket, a server that is not startgated), a full queue or a refused deadline exits 1\n" +
			"without running COMMAND: a paused or draining gate must not be bypassed by a mistake.",
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := admission.ParseClass(class)
			if err != nil {
				return usagef("--class: %v", err)
			}
			if hold < 0 {
				return usagef("--hold %v: must not be negative", hold)
			}
			if !cmd.Flags().Changed("description") {
				desc = strings.Join(args, " ")
				if len(desc) > maxDescription {
					desc = desc[:maxDescription]
				}
			}
			start := &pb.AcquireStart{Class: pb.Class(c) + 1, Tenant: tenant, Description: desc}
			if hold > 0 {
				start.Hold = durationpb.New(hold)
			}
			return a.hold(cmd.Context(), start, args, verbose, failOpen)
		},
	}
	f := cmd.Flags()
	// Flags after COMMAND belong to COMMAND, with or without "--".
	f.SetInterspersed(false)
	f.StringVar(&class, "class", "normal", "priority class: critical, high, normal, low or background")
	f.StringVar(&tenant, "tenant", "", "tenant for fairness within the class")
	f.StringVar(&desc, "description", "", "what is starting, for listings (default: the command line)")
	f.DurationVar(&hold, "hold", 0, "hold cap of the slot (default: the daemon's max_hold)")
	f.BoolVarP(&verbose, "verbose", "v", false, "say on stderr when queued and granted")
	f.BoolVar(&failOpen, "fail-open", true, "run COMMAND without a slot when startgated is not there or shutting down")
	return cmd
}

func (a *app) hold(ctx context.Context, start *pb.AcquireStart, args []string, verbose, failOpen bool) error {
	// A command that cannot run must not take a slot first.
	path, err := exec.LookPath(args[0])
	if err != nil {
		return exitError{code: 127, msg: fmt.Sprintf("startgatectl: %v", err)}
	}
	client, err := a.client()
	if err != nil {
		return err
	}
	// Signals are this command's business: while queued they abandon the
	// wait, while COMMAND runs they are forwarded to it. The slot must
	// outlive the run's context (cancelled on SIGINT by Main), so the
	// stream gets its own.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()

	stream, granted, err := a.acquire(sctx, client, start, sigs, cancel, verbose)
	if err != nil {
		gone, out := a.failure(err)
		var ee exitError
		if !failOpen || errors.As(err, &ee) {
			return out
		}
		why := strings.TrimPrefix(out.Error(), "startgatectl: ")
		// Only the gate's absence runs the command ungated. A socket that
		// cannot be used or a server that is not startgated is a mistake:
		// running the command then would bypass a pause or a drain the
		// operator believes in force.
		switch grpcstatus.Code(err) {
		case codes.Unavailable:
			if gone {
				fmt.Fprintf(a.streams.Err, "startgatectl: warning: %s; running the command without a start slot\n", why)
				return a.run(path, args, sigs, func() {})
			}
		case codes.Unimplemented:
			why = fmt.Sprintf("%s is not startgated (%s)", a.socket, grpcstatus.Convert(err).Message())
		default:
			// The operator's policy (a full queue, a refused deadline)
			// or the daemon's answer.
			return out
		}
		return exitError{code: 1, msg: fmt.Sprintf("startgatectl: %s; not running the command", why)}
	}

	// The monitor reads the stream while COMMAND runs: the slot can end
	// early (hold cap, an operator's release, the daemon going away).
	monitorDone := make(chan struct{})
	var closing atomic.Bool
	go func() {
		defer close(monitorDone)
		a.monitorLease(stream, granted.LeaseId, &closing)
	}()
	// Give the slot back and wait (briefly) for the daemon to confirm, so
	// that a script running hold in a loop does not race its own slots.
	release := func() {
		closing.Store(true)
		_ = stream.CloseSend()
		select {
		case <-monitorDone:
		case <-time.After(a.timeout):
			cancel()
			<-monitorDone
		}
	}

	return a.run(path, args, sigs, release)
}

// acquire opens the Acquire stream and waits for the grant. Errors are
// raw gRPC errors or exitErrors (an interruption).
func (a *app) acquire(ctx context.Context, client pb.StartgateClient, start *pb.AcquireStart, sigs <-chan os.Signal,
	cancel context.CancelFunc, verbose bool) (pb.Startgate_AcquireClient, *pb.Granted, error) {
	stream, err := client.Acquire(ctx)
	if err != nil {
		return nil, nil, err
	}
	if err := stream.Send(&pb.AcquireRequest{Msg: &pb.AcquireRequest_Start{Start: start}}); err != nil && !errors.Is(err, io.EOF) {
		return nil, nil, err
	}
	granted, err := a.awaitGrant(stream, sigs, cancel, verbose)
	return stream, granted, err
}

// run runs COMMAND to its end, forwarding signals, then calls release.
func (a *app) run(path string, args []string, sigs <-chan os.Signal, release func()) error {
	child := exec.Command(path, args[1:]...)
	child.Args[0] = args[0]
	child.Stdin, child.Stdout, child.Stderr = a.streams.In, a.streams.Out, a.streams.Err
	if err := child.Start(); err != nil {
		release()
		return exitError{code: 126, msg: fmt.Sprintf("startgatectl: %v", err)}
	}
	waited := make(chan error, 1)
	go func() { waited <- child.Wait() }()
	var werr error
wait:
	for {
		select {
		case s := <-sigs:
			_ = child.Process.Signal(s)
		case werr = <-waited:
			break wait
		}
	}
	release()
	return exitCode(werr)
}

// awaitGrant reads queued messages until granted.
func (a *app) awaitGrant(stream pb.Startgate_AcquireClient, sigs <-chan os.Signal, cancel context.CancelFunc, verbose bool) (*pb.Granted, error) {
	type recv struct {
		m   *pb.AcquireResponse
		err error
	}
	msgs := make(chan recv, 1)
	for {
		go func() {
			m, err := stream.Recv()
			msgs <- recv{m, err}
		}()
		var r recv
		select {
		case r = <-msgs:
		case s := <-sigs:
			cancel()
			<-msgs
			return nil, exitError{code: 128 + int(s.(syscall.Signal)), msg: "startgatectl: interrupted while waiting for a start slot"}
		}
		if r.err != nil {
			return nil, r.err
		}
		switch m := r.m.Msg.(type) {
		case *pb.AcquireResponse_Queued:
			if verbose {
				fmt.Fprintf(a.streams.Err, "startgatectl: queued (%s, position %d of %d)\n", className(m.Queued.Class), m.Queued.Position, m.Queued.QueueLength)
			}
		case *pb.AcquireResponse_Granted:
			if verbose {
				fmt.Fprintf(a.streams.Err, "startgatectl: granted lease %d (%s, waited %s)\n", m.Granted.LeaseId, m.Granted.Reason, durStr(m.Granted.Waited))
			}
			return m.Granted, nil
		default:
			return nil, exitError{code: 1, msg: fmt.Sprintf("startgatectl: unexpected %T before the grant", m)}
		}
	}
}

// monitorLease reads the stream to its end, warning when the slot ends
// before COMMAND does. A release after CloseSend is the normal end.
func (a *app) monitorLease(stream pb.Startgate_AcquireClient, id uint64, closing *atomic.Bool) {
	for {
		m, err := stream.Recv()
		if err != nil {
			if !errors.Is(err, io.EOF) && rpcMessage(err) != "" {
				fmt.Fprintf(a.streams.Err, "startgatectl: warning: lost the start slot (lease %d): %s\n", id, rpcMessage(err))
			}
			return
		}
		if e := m.GetExpired(); e != nil {
			fmt.Fprintf(a.streams.Err, "startgatectl: warning: lease %d expired after %s (hold cap); the command continues without a start slot\n",
				id, durStr(e.Held))
		}
		if r := m.GetReleased(); r != nil && !closing.Load() {
			fmt.Fprintf(a.streams.Err, "startgatectl: warning: lease %d ended early (%s); the command continues without a start slot\n", id, r.Reason)
		}
	}
}

// exitCode maps COMMAND's end to hold's exit: its code, or 128+signal
// like a shell.
func exitCode(err error) error {
	if err == nil {
		return nil
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return exitError{code: 128 + int(ws.Signal())}
		}
		return exitError{code: ee.ExitCode()}
	}
	return exitError{code: 1, msg: fmt.Sprintf("startgatectl: %v", err)}
}
