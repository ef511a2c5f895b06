#!/bin/sh
# Records what PM2 7.0.4 does with each corpus file (see record.js):
#   PM2=/path/to/node_modules/.bin/pm2 tests/pm2/corpus/record.sh [CONFIG...]
# Each file runs in a copy of this folder, under a private PM2_HOME, from
# the file's folder (PM2 resolves paths against its own cwd), and PM2 is
# killed afterwards.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
pm2=${PM2:?set PM2 to the pm2 binary}
cd "$here"
files=${*:-$(ls *.config.js *.config.cjs *.json | grep -v -e pm2.json -e package.json)}
for config in $files; do
  work=$(mktemp -d)
  cp -r "$here"/. "$work"/
  home=$(mktemp -d)
  env=""
  case "$config" in *env-production*) env=production ;; esac
  (
    cd "$work"
    export PM2_HOME="$home"
    if [ -n "$env" ]; then "$pm2" start "$config" --env "$env" >/dev/null; else "$pm2" start "$config" >/dev/null; fi
    sleep 4
    "$pm2" jlist > "$home/jlist.json"
    node "$here/record.js" "$work" "$config" "$home/jlist.json" $env > "$here/${config%.*}.pm2.json"
    "$pm2" kill >/dev/null
  )
  rm -rf "$work" "$home"
  echo "recorded $config"
done
