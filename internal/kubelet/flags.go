package kubelet

import (
	"fmt"
	"io"
	"strings"

	"github.com/spf13/pflag"
	cliflag "k8s.io/component-base/cli/flag"
)

// The kubelet flags the switch reads. kubelet parses its command line
// with pflag and k8s.io/component-base's word-separator normalisation
// (--container_runtime_endpoint is --container-runtime-endpoint), and of
// a flag given twice the last wins; so does this.
const (
	flagEndpoint      = "container-runtime-endpoint"
	flagImageEndpoint = "image-service-endpoint"
	flagConfig        = "config"
	flagConfigDir     = "config-dir"
	flagKubeconfig    = "kubeconfig"
	flagHostname      = "hostname-override"
)

// kubeletFlags are the values of those flags on a command line, and for
// the endpoint every argument that sets it, in order.
type kubeletFlags struct {
	values map[string]string
	// endpointArgs indexes the args that set the endpoint (the flag's
	// value word: --f=v is one word, --f v the second).
	endpointArgs []int
}

// parseKubeletFlags parses args (without the program name) as kubelet
// would, ignoring the flags this package does not need.
func parseKubeletFlags(args []Arg) (*kubeletFlags, error) {
	kf := &kubeletFlags{values: map[string]string{}}
	fs := pflag.NewFlagSet("kubelet", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.SetNormalizeFunc(cliflag.WordSepNormalizeFunc)
	fs.ParseErrorsAllowlist.UnknownFlags = true
	for _, name := range []string{flagEndpoint, flagImageEndpoint, flagConfig, flagConfigDir, flagKubeconfig, flagHostname} {
		fs.String(name, "", "")
	}
	words := make([]string, len(args))
	for i, a := range args {
		words[i] = a.Value
	}
	if err := fs.Parse(words); err != nil {
		return nil, fmt.Errorf("kubelet: its command line does not parse: %w", err)
	}
	fs.Visit(func(f *pflag.Flag) { kf.values[f.Name] = f.Value.String() })
	// Which words set the endpoint: pflag does not say, so find them the
	// way it reads them (up to a bare "--", which ends the flags).
	for i := 0; i < len(words); i++ {
		w := words[i]
		if w == "--" {
			break
		}
		name, _, hasValue := strings.Cut(strings.TrimLeft(w, "-"), "=")
		if !strings.HasPrefix(w, "--") || string(cliflag.WordSepNormalizeFunc(fs, name)) != flagEndpoint {
			continue
		}
		if hasValue {
			kf.endpointArgs = append(kf.endpointArgs, i)
		} else if i+1 < len(words) {
			kf.endpointArgs = append(kf.endpointArgs, i+1)
			i++
		}
	}
	return kf, nil
}

// endpointValue is the value word args[i] sets the endpoint to.
func endpointValue(a Arg) string {
	if _, v, ok := strings.Cut(a.Value, "="); ok && strings.HasPrefix(a.Value, "--") {
		return v
	}
	return a.Value
}
