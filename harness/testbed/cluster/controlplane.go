package cluster

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// startEtcd runs a single-member etcd with its data in DIR/etcd, client
// and peer URLs on free loopback ports, and waits for /health.
func (c *Cluster) startEtcd(ctx context.Context, bin string) error {
	for attempt := 1; ; attempt++ {
		client, err := freePort("127.0.0.1")
		if err != nil {
			return fmt.Errorf("cluster: etcd: %w", err)
		}
		peer, err := freePort("127.0.0.1")
		if err != nil {
			return fmt.Errorf("cluster: etcd: %w", err)
		}
		clientURL := "http://127.0.0.1:" + strconv.Itoa(client)
		peerURL := "http://127.0.0.1:" + strconv.Itoa(peer)
		args := []string{
			"--name", "sg",
			"--data-dir", filepath.Join(c.dir, "etcd"),
			"--listen-client-urls", clientURL,
			"--advertise-client-urls", clientURL,
			"--listen-peer-urls", peerURL,
			"--initial-advertise-peer-urls", peerURL,
			"--initial-cluster", "sg=" + peerURL,
			"--initial-cluster-state", "new",
			"--log-level", "warn",
			"--logger", "zap",
		}
		p, err := startComponent(Etcd, c.dir, c.LogPath(Etcd), bin, args)
		if err != nil {
			return err
		}
		c.controlPlane = append(c.controlPlane, p)
		health := &http.Client{Transport: &http.Transport{Proxy: nil}}
		err = p.waitUp(ctx, func(ctx context.Context) error {
			return getOK(ctx, health, clientURL+"/health", `"health":"true"`)
		})
		health.CloseIdleConnections()
		if errors.Is(err, errPortTaken) && attempt < portAttempts {
			c.controlPlane = c.controlPlane[:len(c.controlPlane)-1]
			_ = p.stop(ctx, 0)
			continue
		}
		if err != nil {
			return err
		}
		c.etcdURL = clientURL
		return nil
	}
}

// startAPIServer runs kube-apiserver on a free loopback port, writes the
// kubeconfigs once it has its port, and waits for /readyz.
func (c *Cluster) startAPIServer(ctx context.Context, p *pki) error {
	k := func(name string) string { return filepath.Join(c.pkiDir(), name) }
	tlsCfg, err := c.adminTLS(p)
	if err != nil {
		return err
	}
	for attempt := 1; ; attempt++ {
		port, err := freePort("127.0.0.1")
		if err != nil {
			return fmt.Errorf("cluster: apiserver: %w", err)
		}
		args := []string{
			"--etcd-servers", c.etcdURL,
			"--bind-address", "127.0.0.1",
			"--advertise-address", "127.0.0.1",
			"--secure-port", strconv.Itoa(port),
			"--tls-cert-file", k(apiserverCrt),
			"--tls-private-key-file", k(apiserverKey),
			"--client-ca-file", k(caCrt),
			"--authorization-mode", "Node,RBAC",
			"--service-cluster-ip-range", serviceCIDR,
			"--service-account-issuer", "https://kubernetes.default.svc.cluster.local",
			"--service-account-key-file", k(saPubFile),
			"--service-account-signing-key-file", k(saKeyFile),
			"--kubelet-client-certificate", k(apiKubeletCrt),
			"--kubelet-client-key", k(apiKubeletKey),
			"--kubelet-certificate-authority", k(caCrt),
			"--kubelet-preferred-address-types", "InternalIP",
			// The "kubernetes" Service's endpoints would be 127.0.0.1,
			// which Endpoints validation refuses (loopback), every 10 s in
			// the log. Nothing in a hostNetwork-only cluster dials the
			// service IP anyway.
			"--endpoint-reconciler-type", "none",
			"--allow-privileged=true",
			"--profiling=false",
			// --cert-dir is where an apiserver without --tls-cert-file
			// writes a self-signed pair; point it in DIR anyway.
			"--cert-dir", filepath.Join(c.dir, "pki", "apiserver-generated"),
		}
		if !c.opts.NoNodeRestriction {
			// kubeadm's: a node may change only its own Node, its own
			// pods' status and its own Lease in kube-node-lease, so
			// nothing here passes only because nodes trust each other.
			args = append(args, "--enable-admission-plugins", "NodeRestriction")
		}
		proc, err := startComponent(APIServer, c.dir, c.LogPath(APIServer), filepath.Join(c.bin, APIServer), args)
		if err != nil {
			return err
		}
		c.controlPlane = append(c.controlPlane, proc)
		c.apiURL = "https://127.0.0.1:" + strconv.Itoa(port)
		c.transport = newTransport(tlsCfg)
		probe := &http.Client{Transport: c.transport}
		err = proc.waitUp(ctx, func(ctx context.Context) error {
			return getOK(ctx, probe, c.apiURL+"/readyz", "ok")
		})
		if errors.Is(err, errPortTaken) && attempt < portAttempts {
			c.transport.CloseIdleConnections()
			c.controlPlane = c.controlPlane[:len(c.controlPlane)-1]
			_ = proc.stop(ctx, 0)
			continue
		}
		if err != nil {
			return err
		}
		break
	}
	if err := writeKubeconfig(c.Kubeconfig(), c.apiURL, "admin", p.ca.cert, p.admin); err != nil {
		return err
	}
	if err := writeKubeconfig(c.NodeKubeconfig(), c.apiURL, "system:node:"+c.nodeName, p.ca.cert, p.kubeletClient); err != nil {
		return err
	}
	cs, err := kubernetes.NewForConfig(&rest.Config{
		Host:      c.apiURL,
		Transport: c.transport,
		QPS:       50,
		Burst:     100,
		UserAgent: "startgate-cluster",
	})
	if err != nil {
		return fmt.Errorf("cluster: client: %w", err)
	}
	c.client = cs
	return nil
}

// startControllers runs kube-controller-manager and kube-scheduler with
// the admin kubeconfig, without leader election and without serving
// (--secure-port=0: nothing needs their health or metrics endpoints, and
// then they need no ports).
func (c *Cluster) startControllers() error {
	k := func(name string) string { return filepath.Join(c.pkiDir(), name) }
	cm := []string{
		"--kubeconfig", c.Kubeconfig(),
		"--leader-elect=false",
		"--secure-port=0",
		"--service-cluster-ip-range", serviceCIDR,
		// The tokens controller signs ServiceAccount tokens with the key
		// the apiserver verifies, and the root-ca publisher puts the CA
		// in every namespace's kube-root-ca.crt: without them pods wait
		// forever for their projected token volume.
		"--service-account-private-key-file", k(saKeyFile),
		"--root-ca-file", k(caCrt),
		// CSRs get signed by the cluster CA, for tests that try.
		"--cluster-signing-cert-file", k(caCrt),
		"--cluster-signing-key-file", k(caKey),
		"--profiling=false",
	}
	sched := []string{
		"--kubeconfig", c.Kubeconfig(),
		"--leader-elect=false",
		"--secure-port=0",
		"--profiling=false",
	}
	for _, s := range []struct {
		name string
		args []string
	}{{ControllerManager, cm}, {Scheduler, sched}} {
		p, err := startComponent(s.name, c.dir, c.LogPath(s.name), filepath.Join(c.bin, s.name), s.args)
		if err != nil {
			return err
		}
		c.controlPlane = append(c.controlPlane, p)
	}
	return nil
}

// adminTLS is the TLS config of the admin client: the cluster CA as the
// only root, the admin certificate.
func (c *Cluster) adminTLS(p *pki) (*tls.Config, error) {
	cert, err := tls.X509KeyPair(p.admin.cert, p.admin.key)
	if err != nil {
		return nil, fmt.Errorf("cluster: admin key pair: %w", err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(p.caCert)
	return &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, nil
}

// newTransport is the admin client's own transport, not one from
// client-go's process-wide cache, so Stop can close its connections; no
// proxy from the environment, the apiserver is on loopback.
func newTransport(tlsCfg *tls.Config) *http.Transport {
	return &http.Transport{
		TLSClientConfig:     tlsCfg,
		DialContext:         (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout: 10 * time.Second,
		ForceAttemptHTTP2:   true,
		MaxIdleConnsPerHost: 25,
		IdleConnTimeout:     90 * time.Second,
	}
}

// getOK GETs url and wants 200 with want in the body.
func getOK(ctx context.Context, client *http.Client, url, want string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), want) {
		return fmt.Errorf("GET %s: %s: %.200s", url, resp.Status, body)
	}
	return nil
}

// writeKubeconfig writes a kubeconfig with the CA and the client pair
// embedded, so the file works wherever it is copied to.
func writeKubeconfig(path, server, user string, ca []byte, p pair) error {
	b64 := base64.StdEncoding.EncodeToString
	cfg := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: startgate
  cluster:
    server: %s
    certificate-authority-data: %s
users:
- name: %q
  user:
    client-certificate-data: %s
    client-key-data: %s
contexts:
- name: startgate
  context:
    cluster: startgate
    user: %q
current-context: startgate
`, server, b64(ca), user, b64(p.cert), b64(p.key), user)
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		return fmt.Errorf("cluster: kubeconfig: %w", err)
	}
	return nil
}
