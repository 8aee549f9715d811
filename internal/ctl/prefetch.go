package ctl

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	pb "github.com/startgate/startgate/proto/startgate/v1"
)

// PrefetchEntry is one entry of `prefetch ls -o json`, a list scripts
// read (issue 4): digests in full, sizes in bytes, every key present.
type PrefetchEntry struct {
	Reference     string     `json:"reference"`
	RunningDigest string     `json:"running_digest"`
	NewDigest     string     `json:"new_digest"`
	State         string     `json:"state"`
	BytesDone     int64      `json:"bytes_done"`
	BytesTotal    int64      `json:"bytes_total"`
	LayersFetched int        `json:"layers_fetched"`
	FetchedLayers []string   `json:"fetched_layers"`
	ConfigDigest  string     `json:"config_digest"`
	Error         string     `json:"error"`
	Updated       *time.Time `json:"updated"`
	// Lease holds the new digest's content until Expires or until a pull
	// uses it.
	Lease   string     `json:"lease"`
	Expires *time.Time `json:"expires"`
	// PreviousDigest is what the node ran before RunningDigest, protected
	// until PreviousUntil (the rollback window).
	PreviousDigest string     `json:"previous_digest"`
	PreviousUntil  *time.Time `json:"previous_until"`
	// Hits counts pulls served from this reference's prefetched content.
	Hits int `json:"hits"`
}

func prefetchOut(es []*pb.PrefetchEntry) []PrefetchEntry {
	out := make([]PrefetchEntry, 0, len(es))
	for _, e := range es {
		out = append(out, PrefetchEntry{
			Reference: e.Reference, RunningDigest: e.RunningDigest, NewDigest: e.NewDigest, State: e.State,
			BytesDone: e.BytesDone, BytesTotal: e.BytesTotal, LayersFetched: int(e.LayersFetched),
			FetchedLayers: append([]string{}, e.FetchedLayers...), ConfigDigest: e.ConfigDigest,
			Error: e.Error, Updated: timePtr(e.Updated),
			Lease: e.Lease, Expires: timePtr(e.Expires),
			PreviousDigest: e.PreviousDigest, PreviousUntil: timePtr(e.PreviousUntil),
			Hits: int(e.Hits),
		})
	}
	return out
}

func (a *app) prefetchCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "prefetch",
		Short: "List, add and remove the tags whose new digests are fetched ahead of kubelet",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return usagef("prefetch: want a subcommand: ls, add REF or rm REF")
		},
	}
	cmd.AddCommand(a.prefetchLsCommand(), a.prefetchAddCommand(), a.prefetchRmCommand())
	return cmd
}

func (a *app) prefetchLsCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List the watched tags: running and new digest, state, progress, age, error",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			r, err := unary(a, cmd, pb.StartgateClient.PrefetchList, &pb.PrefetchListRequest{})
			if err != nil {
				return err
			}
			es := prefetchOut(r.Entries)
			if a.output == "table" {
				return writePrefetchTable(a.streams.Out, es, time.Now())
			}
			return emit(a.streams.Out, a.output, es)
		},
	}
}

func (a *app) prefetchAddCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "add REF",
		Short: "Watch a tag (e.g. registry.example.com/app:1) and resolve it now, to announce a patch",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := unary(a, cmd, pb.StartgateClient.PrefetchAdd, &pb.PrefetchAddRequest{Reference: args[0]}); err != nil {
				return err
			}
			return a.confirm(fmt.Sprintf("watching %s (resolving now)", args[0]))
		},
	}
}

func (a *app) prefetchRmCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "rm REF",
		Aliases: []string{"remove"},
		Short:   "Stop watching a tag until it is added again",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := unary(a, cmd, pb.StartgateClient.PrefetchRemove, &pb.PrefetchRemoveRequest{Reference: args[0]}); err != nil {
				return err
			}
			return a.confirm(fmt.Sprintf("stopped watching %s", args[0]))
		},
	}
}

func writePrefetchTable(w io.Writer, es []PrefetchEntry, now time.Time) error {
	tw := table(w)
	fmt.Fprintln(tw, "REFERENCE\tRUNNING\tNEW\tSTATE\tPROGRESS\tAGE\tHITS\tERROR")
	for _, e := range es {
		age := "-"
		if e.Updated != nil {
			age = ageStr(now.Sub(*e.Updated))
		}
		errMsg := strings.Join(strings.Fields(e.Error), " ") // one line per entry
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\n", e.Reference, shortDigest(e.RunningDigest), shortDigest(e.NewDigest),
			e.State, progress(e.BytesDone, e.BytesTotal), age, e.Hits, orDash(errMsg))
	}
	return tw.Flush()
}

// shortDigest is the first 12 hex characters of a digest, as docker and
// crictl show image IDs; "-" for none.
func shortDigest(d string) string {
	if d == "" {
		return "-"
	}
	if _, hex, ok := strings.Cut(d, ":"); ok {
		d = hex
	}
	if len(d) > 12 {
		d = d[:12]
	}
	return d
}

const barWidth = 10

// progress is a bar and bytes done of total, "[#####.....] 10.2/20.5 MB";
// "-" when the total is not known.
func progress(done, total int64) string {
	if total <= 0 {
		return "-"
	}
	done = min(max(done, 0), total)
	n := int(done * barWidth / total)
	unit, div := sizeUnit(total)
	bar := strings.Repeat("#", n) + strings.Repeat(".", barWidth-n)
	if div == 1 {
		return fmt.Sprintf("[%s] %d/%d %s", bar, done, total, unit)
	}
	return fmt.Sprintf("[%s] %.1f/%.1f %s", bar, float64(done)/div, float64(total)/div, unit)
}

// sizeUnit picks a decimal unit for n bytes, as registries and docker
// report image sizes.
func sizeUnit(n int64) (string, float64) {
	switch {
	case n >= 1e9:
		return "GB", 1e9
	case n >= 1e6:
		return "MB", 1e6
	case n >= 1e3:
		return "kB", 1e3
	}
	return "B", 1
}

// ageStr is a duration in its largest whole unit: 42s, 5m, 3h, 2d.
func ageStr(d time.Duration) string {
	switch {
	case d < 0:
		return "0s"
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d/time.Second))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d/time.Minute))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d/time.Hour))
	}
	return fmt.Sprintf("%dd", int(d/(24*time.Hour)))
}
