package cluster

import (
	"crypto/x509"
	"encoding/pem"
	"net"
	"slices"
	"testing"
	"time"
)

func parseCert(t *testing.T, name string, b []byte) *x509.Certificate {
	t.Helper()
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "CERTIFICATE" {
		t.Fatalf("%s: not a PEM certificate", name)
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return c
}

// TestPKI: every leaf chains to the CA for its use, with the names the
// components check: the apiserver's SANs for in-cluster and loopback
// clients, the kubelet's for the apiserver dialing the node IP, and the
// client identities RBAC and the Node authorizer act on.
func TestPKI(t *testing.T) {
	nodeIP := net.ParseIP("192.0.2.7")
	p, err := newPKI("n1", nodeIP)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(parseCert(t, "ca", p.ca.cert))
	for _, tc := range []struct {
		name   string
		pair   pair
		usage  x509.ExtKeyUsage
		cn     string
		orgs   []string
		verify string // a DNS name or IP the certificate must be valid for
	}{
		{"apiserver", p.apiserver, x509.ExtKeyUsageServerAuth, "kube-apiserver", nil, "127.0.0.1"},
		{"apiserver", p.apiserver, x509.ExtKeyUsageServerAuth, "kube-apiserver", nil, serviceIP},
		{"apiserver", p.apiserver, x509.ExtKeyUsageServerAuth, "kube-apiserver", nil, "kubernetes.default.svc"},
		{"apiserver", p.apiserver, x509.ExtKeyUsageServerAuth, "kube-apiserver", nil, "localhost"},
		{"kubelet serving", p.kubeletServing, x509.ExtKeyUsageServerAuth, "n1", nil, "192.0.2.7"},
		{"kubelet serving", p.kubeletServing, x509.ExtKeyUsageServerAuth, "n1", nil, "127.0.0.1"},
		{"admin", p.admin, x509.ExtKeyUsageClientAuth, "startgate-admin", []string{"system:masters"}, ""},
		{"kubelet client", p.kubeletClient, x509.ExtKeyUsageClientAuth, "system:node:n1", []string{"system:nodes"}, ""},
		{"apiserver-kubelet-client", p.apiserverKubeletClient, x509.ExtKeyUsageClientAuth, "kube-apiserver-kubelet-client", []string{"system:masters"}, ""},
	} {
		c := parseCert(t, tc.name, tc.pair.cert)
		if _, err := x509.ParseECPrivateKey(mustPEM(t, tc.name, tc.pair.key)); err != nil {
			t.Errorf("%s: key: %v", tc.name, err)
		}
		if _, err := c.Verify(x509.VerifyOptions{Roots: roots, DNSName: tc.verify, KeyUsages: []x509.ExtKeyUsage{tc.usage}, CurrentTime: time.Now()}); err != nil {
			t.Errorf("%s for %q: got %v, want a valid chain", tc.name, tc.verify, err)
		}
		if c.Subject.CommonName != tc.cn || !slices.Equal(c.Subject.Organization, tc.orgs) {
			t.Errorf("%s: got CN %q O %v, want CN %q O %v", tc.name, c.Subject.CommonName, c.Subject.Organization, tc.cn, tc.orgs)
		}
	}
	if _, err := x509.ParsePKIXPublicKey(mustPEM(t, "sa.pub", p.saPub)); err != nil {
		t.Errorf("sa.pub: %v", err)
	}
	if _, err := x509.ParseECPrivateKey(mustPEM(t, "sa.key", p.saKey)); err != nil {
		t.Errorf("sa.key: %v", err)
	}
}

func mustPEM(t *testing.T, name string, b []byte) []byte {
	t.Helper()
	block, _ := pem.Decode(b)
	if block == nil {
		t.Fatalf("%s: not PEM", name)
	}
	return block.Bytes
}
