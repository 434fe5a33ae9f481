# The proxy's Node.js: the pinned major (.node-version) whatever the app's language. An earlier
# buildpack's Node.js is reused when it is that major; otherwise the pinned version is installed
# privately under the proxy's directory, never on the app's PATH.

DEFAULT_NODE_DOWNLOAD_BASE="https://nodejs.org/dist"

node_arch() {
  case "$(uname -m)" in
    x86_64 | amd64) echo x64 ;;
    aarch64 | arm64) echo arm64 ;;
    *) fail "no Node.js build for this machine ($(uname -m)); supported: x86_64, arm64" ;;
  esac
}

sha256_of() { sha256sum "$1" | cut -d ' ' -f 1; }

# A checksum fetched over plain http from a remote host proves nothing: only https, or loopback
# (the buildpack's own tests serve a runtime from 127.0.0.1).
check_download_base() {
  local base="$1"
  [[ "$base" =~ ^https:// ]] && return 0
  [[ "$base" =~ ^http://(127\.0\.0\.1|localhost|\[::1\])(:[0-9]+)?(/|$) ]] && return 0
  fail "MCP_AUTH_PROXY_NODE_DOWNLOAD_BASE must be an https:// URL (got a non-https value)"
}

# Prints the major version of a node binary, or nothing when it does not run.
node_major() {
  local version
  version="$("$1" --version 2>/dev/null)" || return 0
  version="${version#v}"
  echo "${version%%.*}"
}

# install_node VERSION DEST CACHE BASE: the official linux tarball, verified against the release's
# SHASUMS256.txt, unpacked into DEST. The verified tarball is kept in CACHE for the next build; it
# is hashed again before reuse.
install_node() {
  local version="$1" dest="$2" cache="$3" base="${4%/}"
  local name sums expected actual tarball url
  name="node-v${version}-linux-$(node_arch)"
  url="$base/v${version}"
  check_download_base "$base"
  mkdir -p "$cache"
  tarball="$cache/$name.tar.gz"

  sums="$(curl --fail --silent --show-error --location --retry 3 "$url/SHASUMS256.txt" 2>&1)" ||
    fail "cannot download $url/SHASUMS256.txt: $sums"
  expected="$(awk -v file="$name.tar.gz" '$2 == file { print $1 }' <<<"$sums")"
  [[ "$expected" =~ ^[0-9a-f]{64}$ ]] || fail "$url/SHASUMS256.txt lists no checksum for $name.tar.gz"

  if [[ -f "$tarball" && "$(sha256_of "$tarball")" == "$expected" ]]; then
    info "Using Node.js $version from the build cache"
  else
    info "Downloading $url/$name.tar.gz"
    rm -f "$tarball"
    local error
    error="$(curl --fail --silent --show-error --location --retry 3 --output "$tarball.part" "$url/$name.tar.gz" 2>&1)" ||
      fail "cannot download $url/$name.tar.gz: $error"
    actual="$(sha256_of "$tarball.part")"
    if [[ "$actual" != "$expected" ]]; then
      rm -f "$tarball.part"
      fail "checksum mismatch for $name.tar.gz: SHA-256 is $actual, SHASUMS256.txt says $expected"
    fi
    mv "$tarball.part" "$tarball"
    info "SHA-256 verified against SHASUMS256.txt"
  fi

  rm -rf "$dest"
  mkdir -p "$dest"
  tar -xzf "$tarball" -C "$dest" --strip-components 1 || fail "cannot unpack $name.tar.gz"
  [[ "$(node_major "$dest/bin/node")" == "${version%%.*}" ]] || fail "the Node.js in $name.tar.gz does not run here"
}

# Keeps the runtime only: npm, headers and docs were needed for the build, not by the proxy.
slim_private_node() {
  local dir="$1"
  rm -rf "$dir/include" "$dir/share" "$dir/lib" "$dir/bin/npm" "$dir/bin/npx" "$dir/bin/corepack" "$dir"/*.md
}
