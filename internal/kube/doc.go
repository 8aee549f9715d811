// Package kube is startgated's view of the Kubernetes API.
package kube
