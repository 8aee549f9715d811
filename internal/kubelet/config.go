package kubelet

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	kubeletv1beta1 "k8s.io/kubelet/config/v1beta1"
	"sigs.k8s.io/yaml"
)

// The KubeletConfiguration's group and kind, as kubelet requires them.
const (
	configAPIVersion = "kubelet.config.k8s.io/v1beta1"
	configKind       = "KubeletConfiguration"
)

// configFile is one KubeletConfiguration file: the main one (--config)
// or a drop-in (--config-dir).
type configFile struct {
	Path string
	// JSON: the file is written as JSON (nodeadm's config.json); an
	// edit keeps it JSON.
	JSON bool
	// SetsEndpoint: the file has the containerRuntimeEndpoint key, whose
	// value is Endpoint; SetsImage and Image likewise for
	// imageServiceEndpoint.
	SetsEndpoint bool
	Endpoint     string
	SetsImage    bool
	Image        string
	Config       kubeletv1beta1.KubeletConfiguration
}

// readConfig reads a KubeletConfiguration file with kubelet's own types:
// YAML or JSON (sigs.k8s.io/yaml reads both, as kubelet's loader does),
// the apiVersion and kind checked, every field typed.
func readConfig(b []byte, p string) (*configFile, error) {
	cf := &configFile{Path: p, JSON: bytes.HasPrefix(bytes.TrimSpace(b), []byte("{"))}
	if err := yaml.Unmarshal(b, &cf.Config); err != nil {
		return nil, fmt.Errorf("kubelet: %s is not a KubeletConfiguration kubelet can read: %w", p, err)
	}
	if cf.Config.APIVersion != configAPIVersion || cf.Config.Kind != configKind {
		return nil, fmt.Errorf("kubelet: %s has apiVersion %q and kind %q; kubelet reads only apiVersion %s, kind %s", p, cf.Config.APIVersion, cf.Config.Kind, configAPIVersion, configKind)
	}
	// Whether a key is there at all: a drop-in overrides only what it
	// sets (a JSON merge patch), and the typed struct cannot tell an
	// absent key from an empty value.
	var keys map[string]any
	if err := yaml.Unmarshal(b, &keys); err != nil {
		return nil, fmt.Errorf("kubelet: %s: %w", p, err)
	}
	_, cf.SetsEndpoint = keys["containerRuntimeEndpoint"]
	cf.Endpoint = cf.Config.ContainerRuntimeEndpoint
	_, cf.SetsImage = keys["imageServiceEndpoint"]
	cf.Image = cf.Config.ImageServiceEndpoint
	return cf, nil
}

// ConfigEndpoint is the containerRuntimeEndpoint a KubeletConfiguration
// file's content sets; "" when it sets none or does not parse.
func ConfigEndpoint(b []byte) string {
	cf, err := readConfig(b, "")
	if err != nil {
		return ""
	}
	return cf.Endpoint
}

// dropInFiles lists the drop-ins of a --config-dir in the order kubelet
// merges them: every *.conf file under dir, subdirectories included, in
// filepath.WalkDir's lexical order (kubelet's mergeKubeletConfigurations
// in cmd/kubelet/app/server.go). A missing directory has none.
func (n *Node) dropInFiles(dir string) ([]string, error) {
	var out []string
	err := filepath.WalkDir(n.path(dir), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && filepath.Ext(d.Name()) == ".conf" {
			rel, err := filepath.Rel(n.path(dir), p)
			if err != nil {
				return err
			}
			out = append(out, filepath.Join(dir, rel))
		}
		return nil
	})
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("kubelet: --config-dir %s: %w", dir, err)
	}
	// Planned new drop-ins, in their place in the order.
	if extra := n.overlayUnder(dir, ".conf"); len(extra) > 0 {
		out = append(out, extra...)
		// WalkDir's order: name by name, a directory's files where the
		// directory's name sorts.
		sort.Slice(out, func(i, j int) bool {
			a, b := strings.Split(out[i], "/"), strings.Split(out[j], "/")
			for k := 0; k < len(a) && k < len(b); k++ {
				if a[k] != b[k] {
					return a[k] < b[k]
				}
			}
			return len(a) < len(b)
		})
	}
	return out, nil
}

// isStartgateEndpoint: ep is a socket of startgated's (its CRI socket
// under /run/startgate).
func isStartgateEndpoint(ep string) bool {
	return ep == StartgateEndpoint || strings.HasPrefix(strings.TrimPrefix(ep, "unix://"), "/run/startgate/")
}
