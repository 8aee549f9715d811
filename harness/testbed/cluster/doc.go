// Package cluster runs a real one-node Kubernetes cluster for tests, the
// benchmark and `make cluster`: etcd, kube-apiserver,
// kube-controller-manager, kube-scheduler and a kubelet whose CRI endpoint
// is startgated's proxy (or containerd itself, for comparison), all on
// loopback, all in one directory, started and stopped like the containerd
// testbed.
//
//	tb := testbed.StartT(t, testbed.Options{})
//	c := cluster.StartT(t, cluster.Options{RuntimeEndpoint: tb.Endpoint(), CNIConfDir: tb.CNIConfDir()})
//	c.Client().AppsV1().Deployments("default").Create(...)  // hostNetwork pods
//	c.Kubectl(ctx, "logs", pod)
//
// # Binaries
//
// Kubernetes v1.34 from hack/kubernetes (a wrapper module around
// k8s.io/kubernetes; 1.34 is the last release whose kubelet runs on the
// cgroup v1 hosts here by default). Binaries returns $STARTGATE_KUBE_BIN,
// or runs hack/kubernetes/build.sh, which builds once into a cache outside
// the work tree (about 15 minutes on 2 cores) and answers at once after
// that. StartT never builds: go test would time out first; `make test`
// builds through `make kube` and exports STARTGATE_KUBE_BIN. etcd is
// Debian's etcd-server (3.4), which kube-apiserver 1.34 still runs on.
//
// # Life
//
// Start makes /tmp/sgk-NNN (short: kubelet makes unix sockets under its
// root dir, DIR/kubelet, and sun_path has 107 bytes), generates the PKI
// into DIR/pki, then starts and waits for each component in turn, each
// logging to DIR/COMPONENT.log (LogPath):
//
//  1. etcd, data in DIR/etcd, client and peer URLs on free loopback
//     ports; up when GET /health says true.
//  2. kube-apiserver on a free port of 127.0.0.1; up when /readyz answers
//     ok to the admin certificate. Then DIR/admin.kubeconfig and
//     DIR/kubelet.kubeconfig are written (CA and client pair embedded).
//  3. kube-controller-manager and kube-scheduler with the admin
//     kubeconfig, --leader-elect=false and --secure-port=0: one of each,
//     nothing to elect, and nothing needs their serving endpoints, so they
//     take no port at all.
//  4. a loopback conflist in Options.CNIConfDir (see "The network").
//  5. the kubelet; up when the node has a heartbeat from it and its port
//     accepts connections.
//
// Start returns once the node is Ready (per the kubelet it started) and
// untainted, and the default namespace has its service account (the
// ServiceAccount admission plugin refuses pods until the
// controller-manager has made it). On an idle 2-core test machine that
// takes about 4 s. With Options.NoKubelet, Start stops before step 5, so
// a node agent can be started with NodeKubeconfig first (make cluster
// does so for startgated's pod watch); StartKubelet and WaitNodeReady
// finish the job.
//
// Ports are picked by listening on port 0 and closing, so several clusters
// run side by side (parallel test packages). A component that then finds
// its port taken exits with "address already in use" in its log; Start
// picks again, up to five times. Every path is in DIR; the one exception
// is kubelet's log links, below.
//
// # PKI
//
// One ECDSA P-256 CA, made at each Start, signs everything; it is the
// client CA of both the apiserver and the kubelet. Certificates last a
// week from an hour ago (a clock a little behind still accepts them).
//
//   - apiserver serving: IPs 127.0.0.1 and 10.96.0.1 (the "kubernetes"
//     Service's IP in --service-cluster-ip-range=10.96.0.0/16); DNS
//     kubernetes, kubernetes.default, kubernetes.default.svc(.cluster.local),
//     localhost.
//   - admin client, O=system:masters: kubectl, tests, the controller-manager
//     and the scheduler (their own identities would only add RBAC bindings
//     to get right; these are test clusters).
//   - kubelet client, CN=system:node:NAME O=system:nodes: the Node
//     authorizer then lets it (and a node agent using NodeKubeconfig) list
//     and watch pods with the field selector spec.nodeName=NAME, and only
//     so, and get its pods' secrets and config maps.
//   - kubelet serving, IPs node IP and 127.0.0.1, DNS NAME: the apiserver
//     verifies it with --kubelet-certificate-authority.
//   - apiserver-kubelet-client, O=system:masters: how the apiserver
//     authenticates to the kubelet for logs, exec and port-forward.
//   - a service account key pair: the apiserver signs tokens with the
//     private key (--service-account-signing-key-file) and verifies with
//     the public one; the controller-manager's token controller uses the
//     private key, and --root-ca-file is what it publishes in every
//     namespace's kube-root-ca.crt. Without both, every pod waits forever
//     for its projected token volume.
//
// # kube-apiserver
//
// --authorization-mode=Node,RBAC and --enable-admission-plugins
// NodeRestriction, as kubeadm runs it (startgated watching pods and
// startgatectl reading its Node with the node's identity must work under
// the Node authorizer, and nothing may pass only because nodes trust each
// other).
// --bind-address and --advertise-address 127.0.0.1, and
// --endpoint-reconciler-type=none: the "kubernetes" Service's endpoint
// would be 127.0.0.1, which Endpoints validation refuses as loopback, in
// the log every 10 s; with hostNetwork-only pods nothing dials the service
// IP. The apiserver dials the kubelet at its InternalIP
// (--kubelet-preferred-address-types=InternalIP).
//
// # The kubelet, and why each setting
//
// A KubeletConfiguration file (DIR/kubelet.yaml) plus the flags that have
// no config field (--root-dir DIR/kubelet, --kubeconfig, --hostname-override
// NAME, --node-ip).
//
//   - node IP and address: kubelet refuses a loopback node IP ("nodeIP
//     can't be loopback address"), so the node's InternalIP is the host's
//     first global IPv4 (Options.NodeIP overrides), and the kubelet listens
//     on that address only, on a free port: the apiserver reaches it there
//     for logs and exec, and the serving certificate names it.
//   - readOnlyPort 0, healthzPort 0: no unauthenticated port, no second
//     port to collide on.
//   - authentication: x509 with the cluster CA, anonymous and webhook off;
//     authorization AlwaysAllow: the only client is the apiserver, with a
//     system:masters certificate.
//   - cgroupDriver cgroupfs, cgroupsPerQOS false, enforceNodeAllocatable
//     []: no systemd here, and no kubepods cgroup tree on the host; pods'
//     cgroups are runc's, which the containerd testbed cleans up.
//   - failSwapOn false: some hosts have swap; nothing here measures memory.
//   - evictionHard at 1% disk and 100Mi memory, image GC thresholds
//     100/99: a test machine's disk is often fuller than the defaults
//     (10-15%) allow, and an evicting or image-collecting node makes tests
//     flaky, not realistic.
//   - makeIPTablesUtilChains false: the kubelet leaves the host's iptables
//     alone (there is often no iptables at all).
//   - rotateCertificates and serverTLSBootstrap false: the certificates are
//     given, a bootstrap would need CSR approval for nothing.
//   - staticPodPath DIR/manifests, checked every 5 s (the default 20 s is
//     slow for tests; changes are also picked up by inotify).
//   - podLogsDir DIR/pod-logs, volumePluginDir DIR/volume-plugins: the
//     defaults are under /var/log and /usr/libexec.
//   - maxPods 250: the benchmark runs a hundred pods and more.
//   - containerRuntimeEndpoint unix://Options.RuntimeEndpoint,
//     runtimeRequestTimeout and featureGates from Options.
//
// StopKubelet and StartKubelet restart the kubelet on the same root dir:
// the pods' containers keep running under containerd, and the new kubelet
// adopts them. After a restart, WaitNodeReady waits for a Ready condition
// with a heartbeat from the new kubelet: the old Ready status stays on the
// node object for the node monitor's grace period.
//
// # The network
//
// There is no pod network: pods must use hostNetwork: true (and dnsPolicy
// Default or ClusterFirstWithHostNet; there is no cluster DNS). containerd
// still reports NetworkReady false, and the kubelet keeps the node
// NotReady, until its CNI conf dir holds a config: Start writes a
// loopback conflist there (99-startgate-cluster.conflist, written aside
// and renamed in, as containerd watches the dir). No plugin ever runs for
// a hostNetwork pod, so no CNI binaries are needed. A pod without
// hostNetwork fails at RunPodSandbox, by design.
//
// # What Stop guarantees
//
// Stop (StartT calls it in t.Cleanup, after logging every component's log
// tail if the test failed) stops the kubelet, then the scheduler,
// controller-manager, apiserver and etcd, each SIGTERM to its process
// group and SIGKILL after 10 s, and then:
//
//   - no process of the cluster is left: every component runs in its own
//     process group (Setpgid), the group is killed after its leader is
//     reaped, and any etcd or Kubernetes binary still naming DIR is
//     killed;
//   - no mount under DIR: kubelet mounts a tmpfs for every projected,
//     secret or configMap volume under DIR/kubelet/pods and leaves them
//     when it stops; Stop detaches them, deepest first;
//   - DIR is removed, and with it the PKI and etcd's data;
//   - the conflist Start wrote is removed from the runtime's conf dir;
//   - kubelet's links to this cluster's container logs in
//     /var/log/containers (a path kubelet hard-codes) are removed; the
//     directory itself, which kubelet creates, stays.
//
// Stop deletes nothing in the runtime: pods keep running until the
// runtime's owner removes them (the containerd testbed's Stop does, after
// the cluster's Stop when both come from StartT). Every component is
// started with Pdeathsig SIGKILL, so a test binary killed by its timeout
// takes the cluster along (though not DIR).
//
// StartT skips when the machine cannot run a cluster (not root, no etcd,
// no Kubernetes binaries), except under CI=true, where it fails, as the
// testbed's StartT does.
package cluster
