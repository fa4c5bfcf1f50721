//go:build tools

// Package tools names the kine command this module builds.
package tools

import _ "github.com/k3s-io/kine"
