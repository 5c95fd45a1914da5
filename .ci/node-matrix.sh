#!/usr/bin/env bash
# Node version matrix: the Node engine's conformance suite on the supported majors other than the
# pinned LTS (which `npm test` already covers). Each Node comes from the npm package `node`, the
# same way the pinned one does, into node_modules/.cache/node-matrix/<version> (reused by later
# local runs; `npm ci` clears it). The server then runs on that binary directly: harness/servers.ts
# starts `$NODE_BINARY src/main/node.ts <app>` instead of `npm start` when NODE_BINARY is set.
#
# Usage: .ci/node-matrix.sh [version ...]   (default: the pinned versions below)
set -euo pipefail
cd "$(dirname "$0")/.."

# Exact versions of the npm package `node`: the newest 22.x and 26.x it had when pinned.
# Supported is 22.18 and newer (package.json "engines").
PINNED=(22.23.3 26.10.0)
if (($#)); then VERSIONS=("$@"); else VERSIONS=("${PINNED[@]}"); fi

# Every conformance block of test/_conformance.ts, whatever it is called; the hardening ones
# ("node-http: hardening > ...") are left out. A pattern that matches nothing makes `bun test` fail.
PATTERN='^node-http: (?!hardening)'

CACHE=node_modules/.cache/node-matrix
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f s", b - a }'; }

summary=()
failed=0
for version in "${VERSIONS[@]}"; do
  dir="$CACHE/$version"
  bin="$PWD/$dir/node_modules/.bin/node"
  echo "::: node-matrix: Node $version"

  start=$(now)
  if [[ "$("$bin" --version 2>/dev/null || true)" == "v$version" ]]; then
    echo "node-matrix: reusing $dir"
    install="cached"
  else
    rm -rf "$dir"
    mkdir -p "$dir"
    # The package's preinstall script fetches the platform binary; allow it explicitly.
    echo '{ "private": true, "allowScripts": { "node": true } }' >"$dir/package.json"
    npm install --prefix "$dir" "node@$version" --no-save --no-audit --no-fund
    install="installed in $(since "$start")"
  fi
  actual=$("$bin" --version)
  echo "node-matrix: $bin is $actual ($install)"
  if [[ "$actual" != "v$version" ]]; then
    echo "node-matrix: expected v$version, got $actual" >&2
    summary+=("Node $version: FAIL (wrong binary: $actual)")
    failed=1
    continue
  fi

  start=$(now)
  if NODE_BINARY="$bin" node_modules/.bin/bun test test/node-http.test.ts -t "$PATTERN"; then
    summary+=("Node $version: pass ($install, conformance in $(since "$start"))")
  else
    summary+=("Node $version: FAIL ($install, conformance in $(since "$start"))")
    failed=1
  fi
done

echo "::: node-matrix summary"
printf '%s\n' "${summary[@]}"
exit "$failed"
