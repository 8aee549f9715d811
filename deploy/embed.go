// Package deploy holds the Kubernetes manifests startgate ships
// (deploy/fleet: the fleet CRDs and RBAC), embedded for the tests and
// benchmarks that install them on a test cluster exactly as an operator
// would with kubectl apply -f deploy/fleet/.
package deploy

import "embed"

// Fleet is deploy/fleet: crds.yaml and rbac.yaml.
//
//go:embed fleet/*.yaml
var Fleet embed.FS
