#!/bin/sh
# Prints the Go modules compiled into startgated and startgatectl, each
# with its version and the licence files (LICENSE, COPYING, NOTICE...) it
# ships: the notices that the binaries' redistribution must carry (MIT
# and BSD ask for theirs in binary form too). make package installs it as
# /usr/share/doc/startgate/dependencies.gz; debian/copyright points there.
# Fails when a module has no licence file, so that a new dependency
# without one is looked at, not shipped unnoticed.
set -eu
cd "$(dirname "$0")/.."
missing=
list=$(CGO_ENABLED=0 go list -deps -f '{{with .Module}}{{if not .Main}}{{.Path}} {{.Version}}{{with .Replace}} => {{.Path}} {{.Version}}{{end}}|{{if .Replace}}{{.Replace.Dir}}{{else}}{{.Dir}}{{end}}{{end}}{{end}}' \
	./cmd/startgated ./cmd/startgatectl | sort -u)
echo "Go modules compiled into startgated and startgatectl, and their licences."
echo "The Go standard library and runtime: BSD-3-Clause, $(go env GOROOT)/LICENSE below."
echo
printf '================ Go %s\n\n' "$(go env GOVERSION)"
cat "$(go env GOROOT)/LICENSE"
echo
echo "$list" | while IFS='|' read -r mod dir; do
	[ -n "$mod" ] || continue
	files=$(find "$dir" -maxdepth 1 -type f \( -iname 'LICENSE*' -o -iname 'LICENCE*' -o -iname 'COPYING*' -o -iname 'NOTICE*' \) | sort)
	if [ -z "$files" ]; then
		echo "dependency-licenses.sh: $mod ($dir) has no licence file" >&2
		exit 1
	fi
	printf '================ %s\n' "$mod"
	for f in $files; do
		printf -- '---------------- %s\n\n' "$(basename "$f")"
		cat "$f"
		echo
	done
done
