# Build-log lines in Heroku's style, and the one way a build step fails.

topic() {
  step_started=$SECONDS
  echo "-----> $*"
}
# Seconds since the current topic started, for its closing line.
step_seconds() { echo "$((SECONDS - ${step_started:-0})) s"; }
info() { echo "       $*"; }

# Indents a command's output under the current topic.
indent() { sed -u 's/^/       /'; }

fail() {
  echo " !     $*" >&2
  echo " !     The MCP Remote Auth Proxy buildpack failed; see the line above." >&2
  exit 1
}

# Hard links when the build and the cache share a file system (no copy at all), a copy otherwise.
# Safe because nothing edits an installed file in place: npm replaces whole trees.
copy_tree() {
  rm -rf "$2"
  cp -al "$1" "$2" 2>/dev/null || {
    rm -rf "$2"
    cp -a "$1" "$2"
  }
}
