package ctl

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	grpcstatus "google.golang.org/grpc/status"

	"github.com/startgate/startgate/internal/admission"
	pb "github.com/startgate/startgate/proto/startgate/v1"
)

// DefaultSocket is where startgated listens unless configured otherwise.
const DefaultSocket = "/run/startgate/startgate.sock"

// Main runs startgatectl with the process's arguments and streams and
// returns the exit code.
func Main() int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return Run(ctx, os.Args[1:], Streams{In: os.Stdin, Out: os.Stdout, Err: os.Stderr})
}

// Streams are the standard streams of a run.
type Streams struct {
	In       io.Reader
	Out, Err io.Writer
}

// usageError: the command line is wrong (exit 2).
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

// exitError ends the run with a given code, printing msg if set.
type exitError struct {
	code int
	msg  string
}

func (e exitError) Error() string { return e.msg }

// app holds what the global flags decide for one run.
type app struct {
	streams Streams
	socket  string
	output  string
	timeout time.Duration
	conn    *grpc.ClientConn
}

// Run executes startgatectl with args and returns the exit code.
func Run(ctx context.Context, args []string, s Streams) int {
	a := &app{streams: s}
	root := a.rootCommand()
	root.SetArgs(args)
	root.SetIn(s.In)
	root.SetOut(s.Out)
	root.SetErr(s.Err)
	err := root.ExecuteContext(ctx)
	if a.conn != nil {
		a.conn.Close()
	}
	if err == nil {
		return 0
	}
	var ee exitError
	var ue usageError
	switch {
	case errors.As(err, &ee):
		if ee.msg != "" {
			fmt.Fprintln(s.Err, ee.msg)
		}
		return ee.code
	case errors.As(err, &ue):
		fmt.Fprintf(s.Err, "startgatectl: %v\n", err)
		return 2
	default:
		// Errors cobra produces itself (unknown command or flag, wrong
		// arguments) are usage errors too.
		fmt.Fprintf(s.Err, "startgatectl: %v\n", err)
		fmt.Fprintln(s.Err, "Run 'startgatectl --help' for usage.")
		return 2
	}
}

func (a *app) rootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "startgatectl",
		Short: "Inspect and steer startgated, the container start admission gate",
		// Errors are printed once, by Run, with the right exit code.
		SilenceErrors: true,
		SilenceUsage:  true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			switch a.output {
			case "table", "json", "yaml":
			default:
				return usagef("-o %q: want table, json or yaml", a.output)
			}
			if a.timeout <= 0 {
				return usagef("--timeout %v: must be positive", a.timeout)
			}
			if a.socket == "" {
				return usagef("--socket: must not be empty")
			}
			return nil
		},
	}
	socket := os.Getenv("STARTGATE_SOCKET")
	if socket == "" {
		socket = DefaultSocket
	}
	pf := root.PersistentFlags()
	pf.StringVar(&a.socket, "socket", socket, "startgated's unix socket (env STARTGATE_SOCKET)")
	pf.StringVarP(&a.output, "output", "o", "table", "output format: table, json or yaml")
	pf.DurationVar(&a.timeout, "timeout", 10*time.Second, "deadline of each call to the daemon")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.AddCommand(
		a.statusCommand(), a.queueCommand(), a.leasesCommand(), a.watchCommand(),
		a.pauseCommand(), a.resumeCommand(), a.drainCommand(), a.setCommand(), a.releaseCommand(),
		a.bypassCommand(), a.holdCommand(), a.prefetchCommand(), a.versionCommand(), a.nodeCommand(), a.fleetCommand(),
	)
	return root
}

const maxRecv = 64 << 20

// client dials lazily: grpc.NewClient does not connect until the first
// call, which fails at once (no wait-for-ready) when nothing listens.
func (a *app) client() (pb.StartgateClient, error) {
	if a.conn == nil {
		// A full queue (10,000 waiters with 1 KiB descriptions) is larger
		// than gRPC's default 4 MiB receive limit.
		conn, err := dialUnix(a.socket, grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxRecv)))
		if err != nil {
			return nil, exitError{code: 1, msg: fmt.Sprintf("startgatectl: --socket %s: %v", a.socket, err)}
		}
		a.conn = conn
	}
	return pb.NewStartgateClient(a.conn), nil
}

// dialUnix is a gRPC client of the unix socket at path, without
// transport security. The path may be relative. "unix://"+path would
// make its first element an authority, so the dialer connects to the path
// itself (relative to the working directory, like any file argument;
// made absolute it could outgrow sun_path's 108 bytes) and the target is
// only the URL form of where that is. Nothing is dialed before the first
// call.
func dialUnix(path string, opts ...grpc.DialOption) (*grpc.ClientConn, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	return grpc.NewClient((&url.URL{Scheme: "unix", Path: abs}).String(), append([]grpc.DialOption{
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		}),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
	}, opts...)...)
}

func (a *app) unreachable() error {
	return exitError{code: 1, msg: fmt.Sprintf("cannot reach startgated at %s: is it running?", a.socket)}
}

// unary makes one call to the daemon within the command's timeout and
// turns its error into the run's outcome (rpcError).
func unary[Req, Resp any](a *app, cmd *cobra.Command,
	method func(pb.StartgateClient, context.Context, Req, ...grpc.CallOption) (Resp, error), req Req) (Resp, error) {
	var zero Resp
	c, err := a.client()
	if err != nil {
		return zero, err
	}
	ctx, cancel := a.callCtx(cmd.Context())
	defer cancel()
	r, err := method(c, ctx, req)
	if err != nil {
		return zero, a.rpcError(err)
	}
	return r, nil
}

// callCtx bounds one call by --timeout.
func (a *app) callCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, a.timeout)
}

// rpcError turns an error from the daemon into the run's outcome (exit
// 1): the unreachable message when nothing listens on the socket, the
// reason when the socket cannot be used, the status message otherwise.
func (a *app) rpcError(err error) error {
	_, out := a.failure(err)
	return out
}

// failure is rpcError's outcome for err, and whether err means there is
// no gate to wait for (gone): nothing listens on the socket (it does not
// exist, or connecting is refused), or the daemon is shutting down. Every
// other failure (permission denied, a path that is not a socket, a server
// that is not startgated) is a mistake to report, not the gate's absence.
func (a *app) failure(err error) (gone bool, out error) {
	if err == nil {
		return false, nil
	}
	var ee exitError
	if errors.As(err, &ee) {
		return false, ee
	}
	st := grpcstatus.Convert(err)
	switch {
	case st.Code() == codes.Canceled:
		return false, exitError{code: 1, msg: "startgatectl: interrupted"}
	case shuttingDown(err):
		return true, exitError{code: 1, msg: "startgatectl: " + st.Message()}
	case st.Code() != codes.Unavailable:
		return false, exitError{code: 1, msg: "startgatectl: " + st.Message()}
	}
	switch absent, cause := a.probe(); {
	case absent:
		return true, a.unreachable()
	case cause != nil:
		return false, exitError{code: 1, msg: fmt.Sprintf("cannot reach startgated at %s: %v", a.socket, cause)}
	default:
		// Something listens but the call failed on the way: a server
		// that is not startgated, or one that went away mid-call.
		return false, exitError{code: 1, msg: fmt.Sprintf("startgatectl: no answer from startgated at %s: %s", a.socket, st.Message())}
	}
}

// shuttingDown reports whether err is the daemon's own Unavailable: its
// gate closed for shutdown.
func shuttingDown(err error) bool {
	st := grpcstatus.Convert(err)
	return st.Code() == codes.Unavailable && st.Message() == admission.ErrClosed.Error()
}

// probe connects to the socket once, outside gRPC, to learn why a call
// got Unavailable: gRPC reports every failed connection that way, with
// the cause only in its message. absent: nothing listens there (no such
// file, or a socket that refuses). cause: the path is wrong in another
// way (permission denied, not a socket, a file where a directory should
// be). Both zero: something listens.
func (a *app) probe() (absent bool, cause error) {
	d := net.Dialer{Timeout: a.timeout}
	c, err := d.Dial("unix", a.socket)
	if err == nil {
		c.Close()
		return false, nil
	}
	switch {
	case errors.Is(err, syscall.ENOENT):
		return true, nil
	case errors.Is(err, syscall.ECONNREFUSED):
		// connect(2) refuses a path that is not a socket too (a regular
		// file, a directory): a wrong path, not an absent daemon.
		if fi, serr := os.Stat(a.socket); serr == nil && fi.Mode().Type() != fs.ModeSocket {
			return false, errors.New("not a socket")
		}
		return true, nil
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return false, errno
	}
	return false, err
}

// rpcMessage is the message of a gRPC error, "" for a cancellation (ours).
func rpcMessage(err error) string {
	st := grpcstatus.Convert(err)
	if st.Code() == codes.Canceled {
		return ""
	}
	return st.Message()
}
