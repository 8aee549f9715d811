package cluster

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// serviceIP is the first address of serviceCIDR: the apiserver gives it to
// the "kubernetes" Service, so in-cluster clients dial it and its serving
// certificate must name it.
const (
	serviceCIDR = "10.96.0.0/16"
	serviceIP   = "10.96.0.1"
)

// certValidity is long enough for any test or demo session, short enough
// that a leaked key is not a credential for years.
const certValidity = 7 * 24 * time.Hour

// pair is a certificate and its key, both PEM, as written to DIR/pki.
type pair struct {
	cert, key []byte
}

// pki is every credential of a cluster. All certificates are signed by
// one CA, which is also the client CA of the apiserver and the kubelet.
type pki struct {
	ca                     pair
	apiserver              pair // serving: 127.0.0.1, the service IP, kubernetes.default.svc...
	admin                  pair // system:masters: kubectl, tests, controller-manager, scheduler
	kubeletClient          pair // system:node:NAME in system:nodes: the kubelet's kubeconfig
	kubeletServing         pair // serving: the node IP, 127.0.0.1, NAME
	apiserverKubeletClient pair // the apiserver's client cert towards the kubelet
	saKey, saPub           []byte

	caCert *x509.Certificate
	caKey  crypto.Signer
}

// certSpec is one leaf certificate.
type certSpec struct {
	cn     string
	orgs   []string
	ips    []net.IP
	dns    []string
	usages []x509.ExtKeyUsage
}

// newPKI makes a CA and the leaf certificates for a node named nodeName at
// nodeIP, with ECDSA P-256 keys.
func newPKI(nodeName string, nodeIP net.IP) (*pki, error) {
	p := &pki{}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("cluster: pki: %w", err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "startgate-cluster-ca"},
		NotBefore:             now.Add(-time.Hour), // tolerate a clock a little behind
		NotAfter:              now.Add(certValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		return nil, fmt.Errorf("cluster: pki: ca: %w", err)
	}
	if p.caCert, err = x509.ParseCertificate(der); err != nil {
		return nil, fmt.Errorf("cluster: pki: ca: %w", err)
	}
	p.caKey = caKey
	if p.ca.key, err = keyPEM(caKey); err != nil {
		return nil, err
	}
	p.ca.cert = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})

	server := []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	client := []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	loopback := net.ParseIP("127.0.0.1")
	for _, leaf := range []struct {
		to   *pair
		spec certSpec
	}{
		{&p.apiserver, certSpec{
			cn:  "kube-apiserver",
			ips: []net.IP{loopback, net.ParseIP(serviceIP)},
			dns: []string{"kubernetes", "kubernetes.default", "kubernetes.default.svc",
				"kubernetes.default.svc.cluster.local", "localhost"},
			usages: server,
		}},
		{&p.admin, certSpec{cn: "startgate-admin", orgs: []string{"system:masters"}, usages: client}},
		{&p.kubeletClient, certSpec{cn: "system:node:" + nodeName, orgs: []string{"system:nodes"}, usages: client}},
		{&p.kubeletServing, certSpec{
			cn:     nodeName,
			ips:    []net.IP{nodeIP, loopback},
			dns:    []string{nodeName, "localhost"},
			usages: server,
		}},
		{&p.apiserverKubeletClient, certSpec{cn: "kube-apiserver-kubelet-client", orgs: []string{"system:masters"}, usages: client}},
	} {
		if *leaf.to, err = p.issue(leaf.spec, now); err != nil {
			return nil, err
		}
	}

	saKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("cluster: pki: service account key: %w", err)
	}
	if p.saKey, err = keyPEM(saKey); err != nil {
		return nil, err
	}
	pub, err := x509.MarshalPKIXPublicKey(saKey.Public())
	if err != nil {
		return nil, fmt.Errorf("cluster: pki: service account key: %w", err)
	}
	p.saPub = pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub})
	return p, nil
}

func (p *pki) issue(s certSpec, now time.Time) (pair, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return pair{}, fmt.Errorf("cluster: pki: %s: %w", s.cn, err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: s.cn, Organization: s.orgs},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(certValidity),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  s.usages,
		IPAddresses:  s.ips,
		DNSNames:     s.dns,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.caCert, key.Public(), p.caKey)
	if err != nil {
		return pair{}, fmt.Errorf("cluster: pki: %s: %w", s.cn, err)
	}
	kp, err := keyPEM(key)
	if err != nil {
		return pair{}, err
	}
	return pair{cert: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), key: kp}, nil
}

func keyPEM(k *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		return nil, fmt.Errorf("cluster: pki: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err) // crypto/rand does not fail
	}
	return n
}

// File names under DIR/pki; the components read them from there.
const (
	caCrt, caKey                   = "ca.crt", "ca.key"
	apiserverCrt, apiserverKey     = "apiserver.crt", "apiserver.key"
	kubeletCrt, kubeletKey         = "kubelet.crt", "kubelet.key" // serving
	apiKubeletCrt, apiKubeletKey   = "apiserver-kubelet-client.crt", "apiserver-kubelet-client.key"
	saKeyFile, saPubFile           = "sa.key", "sa.pub"
	adminCrt, adminKey             = "admin.crt", "admin.key"
	kubeletClientCrt, kubeletCliKy = "kubelet-client.crt", "kubelet-client.key"
)

// write puts every file in dir, keys mode 0600.
func (p *pki) write(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("cluster: pki: %w", err)
	}
	for name, data := range map[string][]byte{
		caCrt: p.ca.cert, caKey: p.ca.key,
		apiserverCrt: p.apiserver.cert, apiserverKey: p.apiserver.key,
		kubeletCrt: p.kubeletServing.cert, kubeletKey: p.kubeletServing.key,
		apiKubeletCrt: p.apiserverKubeletClient.cert, apiKubeletKey: p.apiserverKubeletClient.key,
		saKeyFile: p.saKey, saPubFile: p.saPub,
		adminCrt: p.admin.cert, adminKey: p.admin.key,
		kubeletClientCrt: p.kubeletClient.cert, kubeletCliKy: p.kubeletClient.key,
	} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			return fmt.Errorf("cluster: pki: %w", err)
		}
	}
	return nil
}
