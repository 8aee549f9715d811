// Package kubelet finds where this node's kubelet takes its container
// runtime endpoint from and switches it between the runtime and
// startgated (startgatectl node enable|disable|status).
//
// # Where the endpoint comes from
//
// Resolve computes what kubelet's next start will use, the way kubelet
// and systemd compute it, never by pattern-matching files:
//
//   - the command line: kubelet.service from systemd's unit search path
//     (unit.go; the first directory that has it), its drop-ins in every
//     kubelet.service.d (a name in a higher-priority directory hides the
//     same name lower down; applied in name order), Environment= and
//     EnvironmentFile= (envfile.go: systemd's env-file rules; the files
//     override Environment=), and ExecStart= split and substituted as
//     systemd does ($NAME as words, ${NAME} in a word; execstart.go).
//     Files are parsed with go-systemd's unit parser. Every argument
//     remembers the file its text came from;
//   - the flags (flags.go): pflag with kubelet's word-separator
//     normalisation; of a repeated flag the last wins;
//   - the configuration (config.go): the --config file and the
//     --config-dir drop-ins (*.conf, in filepath.WalkDir's order, as
//     kubelet's mergeKubeletConfigurations walks them), read with
//     kubelet's own types (k8s.io/kubelet/config/v1beta1) through
//     sigs.k8s.io/yaml, YAML or JSON;
//   - precedence: a flag over the drop-ins (the last that sets it) over
//     the --config file over kubelet's default (containerd's socket).
//
// On a node without a kubelet.service unit, the running kubelet's
// command line (/proc, through procfs) stands in for the unit, and its
// flags cannot be changed. k3s and RKE2 run kubelet inside their own
// binary and start their embedded containerd only while no
// container-runtime-endpoint is set, so they are refused (ErrUnsupported),
// as is a kubelet with no file to set the endpoint in.
//
// # Changing it
//
// PlanEnable changes exactly the place that wins (edit.go): a flag's
// value in the unit or environment file that holds it, the
// containerRuntimeEndpoint value in the drop-in or file that sets it, in
// the file's own quoting and format (JSON stays JSON). When nothing sets
// it, a drop-in of startgate's own goes into --config-dir, else the key
// is added to --config. On a systemd node it also writes a kubelet.service
// drop-in (UnitDropIn) so kubelet pulls startgated in and starts after
// it, after every reboot. Every plan is resolved again over its edits
// (Node.overlay) and must give the endpoint asked for with every other
// argument unchanged, before anything is written; --dry-run prints it.
//
// # The journal
//
// Enable and Disable are journaled (journal.go): backups, a record with
// the digest of each file before and after, atomic synced writes, and
// phases, so that a crash, a full disk or a failed step anywhere leaves
// a state the next Enable or Disable undoes or completes, and Disable
// restores every file byte for byte. A file someone changed after the
// switch keeps their change; only its endpoint is set back.
//
// # Restarting kubelet
//
// Restarter (restart.go) restarts kubelet through systemd when the
// running kubelet started before the last switch, waits for its /healthz
// and, through kubelet's own credentials (NodeRestriction lets a node
// read its own Node and Lease), for its Node to be Ready with a heartbeat
// or a Lease renewal from after the restart;
// startgatectl rolls the switch back when kubelet does not come back.
package kubelet
