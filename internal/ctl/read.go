package ctl

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	pb "github.com/startgate/startgate/proto/startgate/v1"
)

func (a *app) statusCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show limits, in-flight starts, queue, pressure and policy",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			r, err := unary(a, cmd, pb.StartgateClient.Status, &pb.StatusRequest{})
			if err != nil {
				return err
			}
			s := statusOut(r)
			if a.output == "table" {
				return writeStatusTable(a.streams.Out, s)
			}
			return emit(a.streams.Out, a.output, s)
		},
	}
}

func (a *app) leasesCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "leases",
		Short: "List the start slots held",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			r, err := unary(a, cmd, pb.StartgateClient.ListLeases, &pb.ListLeasesRequest{})
			if err != nil {
				return err
			}
			ls := leasesOut(r.Leases, time.Now())
			if a.output == "table" {
				return writeLeasesTable(a.streams.Out, ls)
			}
			return emit(a.streams.Out, a.output, ls)
		},
	}
}

func (a *app) queueCommand() *cobra.Command {
	var (
		watch    bool
		interval time.Duration
	)
	cmd := &cobra.Command{
		Use:   "queue",
		Short: "List the waiting requests, by class then arrival",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			if watch {
				if interval <= 0 {
					return usagef("--interval %v: must be positive", interval)
				}
				return a.watchQueue(cmd.Context(), c, interval)
			}
			return a.printQueue(cmd.Context(), c)
		},
	}
	cmd.Flags().BoolVarP(&watch, "watch", "w", false, "redraw on every event and at --interval until interrupted")
	cmd.Flags().DurationVar(&interval, "interval", time.Second, "with --watch, redraw at least this often")
	return cmd
}

func (a *app) printQueue(ctx context.Context, c pb.StartgateClient) error {
	ctx, cancel := a.callCtx(ctx)
	defer cancel()
	r, err := c.ListQueue(ctx, &pb.ListQueueRequest{})
	if err != nil {
		return a.rpcError(err)
	}
	ws := waitersOut(r.Waiters, time.Now())
	switch a.output {
	case "table":
		return writeQueueTable(a.streams.Out, ws)
	case "json":
		return writeWaitersJSON(a.streams.Out, ws)
	}
	return emit(a.streams.Out, a.output, ws)
}

// watchQueue redraws the queue when the gate reports an event, and at the
// interval so that wait times move. Events that arrive during a redraw
// are coalesced into the next one.
func (a *app) watchQueue(ctx context.Context, c pb.StartgateClient, interval time.Duration) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.Watch(ctx, &pb.WatchRequest{})
	if err != nil {
		return a.rpcError(err)
	}
	if _, err := stream.Header(); err != nil {
		return a.rpcError(err)
	}
	changed := make(chan struct{}, 1)
	ended := make(chan error, 1)
	go func() {
		for {
			if _, err := stream.Recv(); err != nil {
				ended <- err
				return
			}
			select {
			case changed <- struct{}{}:
			default:
			}
		}
	}()
	tty := isTerminal(a.streams.Out)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if tty {
			fmt.Fprint(a.streams.Out, "\033[H\033[2J")
		} else {
			fmt.Fprintf(a.streams.Out, "--- %s\n", time.Now().Format(time.TimeOnly))
		}
		if err := a.printQueue(ctx, c); err != nil {
			return interrupted(ctx, err)
		}
		select {
		case <-changed:
		case <-t.C:
		case err := <-ended:
			if errors.Is(err, io.EOF) {
				return nil // the daemon stopped the watch
			}
			return interrupted(ctx, a.rpcError(err))
		case <-ctx.Done():
			return nil
		}
	}
}

// interrupted turns the error of a watch ended by the user (Ctrl-C) into a
// clean exit.
func interrupted(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return nil
	}
	return err
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

func (a *app) watchCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "watch",
		Short: "Print gate events as they happen (one line each; JSON lines with -o json)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			stream, err := c.Watch(ctx, &pb.WatchRequest{})
			if err != nil {
				return a.rpcError(err)
			}
			for {
				e, err := stream.Recv()
				if errors.Is(err, io.EOF) {
					return nil
				}
				if err != nil {
					return interrupted(ctx, a.rpcError(err))
				}
				if err := a.printEvent(eventOut(e)); err != nil {
					return err
				}
			}
		},
	}
}

func (a *app) printEvent(e Event) error {
	switch a.output {
	case "json":
		b, err := jsonLine(e)
		if err != nil {
			return err
		}
		_, err = a.streams.Out.Write(b)
		return err
	case "yaml":
		fmt.Fprintln(a.streams.Out, "---")
		return emit(a.streams.Out, "yaml", e)
	default:
		_, err := fmt.Fprintln(a.streams.Out, eventLine(e))
		return err
	}
}
