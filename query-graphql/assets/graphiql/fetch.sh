#!/usr/bin/env bash
# Fetches the GraphiQL page's third-party files (MIT licensed) from the npm registry, at the
# pinned versions, and checks them against SHA256SUMS. The binary embeds them: nothing is
# fetched at run time. To upgrade: change a version, run with --update, review, commit.
set -euo pipefail
cd "$(dirname "$0")"
GRAPHIQL=4.1.2
REACT=18.3.1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "graphiql@$GRAPHIQL" "react@$REACT" "react-dom@$REACT" >/dev/null)
tar -xzf "$work/graphiql-$GRAPHIQL.tgz" -C "$work" --transform 's|^package|graphiql|'
tar -xzf "$work/react-$REACT.tgz" -C "$work" --transform 's|^package|react|'
tar -xzf "$work/react-dom-$REACT.tgz" -C "$work" --transform 's|^package|react-dom|'
cp "$work/graphiql/graphiql.min.js" "$work/graphiql/graphiql.min.css" .
cp "$work/react/umd/react.production.min.js" "$work/react-dom/umd/react-dom.production.min.js" .
files="graphiql.min.js graphiql.min.css react.production.min.js react-dom.production.min.js"
if [ "${1:-}" = "--update" ]; then
  sha256sum $files > SHA256SUMS
fi
sha256sum -c SHA256SUMS
