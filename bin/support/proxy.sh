# The proxy's own files in the slug: production dependencies and the compiled JavaScript. Both
# steps expect NODE, NPM_CLI, PROXY_DIR, CACHE and BP_DIR from bin/compile.

# The proxy's node first on PATH for this build only: dependency install scripts run `node`.
run_npm() {
  PATH="$PROXY_DIR/node/bin:$PATH" npm_config_cache="$CACHE/npm" npm_config_update_notifier=false \
    npm_config_fund=false npm_config_audit=false "$NODE" "$NPM_CLI" "$@"
}

# The installed tree is a function of the lockfile, the patches, the Node.js major and the machine:
# with the same four, the previous build's tree is reused instead of unpacking ~300 packages again.
dependencies_key() {
  {
    cat "$BP_DIR/package-lock.json"
    find "$BP_DIR/patches" -type f | LC_ALL=C sort | xargs cat
    echo "node $("$NODE" --version | cut -d . -f 1) $(uname -m)"
  } | sha256sum | cut -c 1-16
}

install_dependencies() {
  cp "$BP_DIR/package.json" "$BP_DIR/package-lock.json" "$PROXY_DIR/"
  cp -R "$BP_DIR/patches" "$PROXY_DIR/patches"
  local cached
  cached="$CACHE/node_modules-$(dependencies_key)"
  if [[ -d "$cached" ]]; then
    copy_tree "$cached" "$PROXY_DIR/node_modules"
    info "Reusing the dependencies of an earlier build (same package-lock.json)"
    return
  fi
  (cd "$PROXY_DIR" && run_npm ci --omit=dev --prefer-offline --loglevel=error 2>&1) | indent ||
    fail "npm ci failed in .mcp-auth-proxy (see above)"
  rm -rf "$CACHE"/node_modules-*
  # Complete or absent: a build stopped halfway must not leave a partial tree to reuse.
  copy_tree "$PROXY_DIR/node_modules" "$cached.partial" && mv "$cached.partial" "$cached"
}

typescript_in_lock() {
  LOCK="$BP_DIR/package-lock.json" FIELD="$1" "$NODE" -p \
    'require(process.env.LOCK).packages["node_modules/typescript"]?.[process.env.FIELD]' 2>/dev/null || true
}

# The typescript of the lockfile (version and integrity), installed once into the build cache
# instead of every devDependency; sets TSC to its command-line script.
ensure_typescript() {
  local version integrity dir
  version="$(typescript_in_lock version)"
  integrity="$(typescript_in_lock integrity)"
  [[ "$version" =~ ^[0-9] && "$integrity" == sha512-* ]] ||
    fail "package-lock.json does not pin typescript (a version and an integrity)"
  dir="$CACHE/typescript-$version"
  installed() {
    TOOL_LOCK="$dir/node_modules/.package-lock.json" "$NODE" -p \
      'require(process.env.TOOL_LOCK).packages["node_modules/typescript"].integrity' 2>/dev/null || true
  }
  if [[ "$(installed)" != "$integrity" ]]; then
    rm -rf "$dir"
    run_npm install --prefix "$dir" --no-save --prefer-offline --loglevel=error "typescript@$version" 2>&1 | indent ||
      fail "cannot install typescript@$version"
    [[ "$(installed)" == "$integrity" ]] ||
      fail "typescript@$version from the registry does not match the integrity in package-lock.json"
  fi
  TSC="$dir/node_modules/typescript/bin/tsc"
}

# The buildpack's tests and CI typecheck; this only strips types (tsconfig.build.json: noCheck).
compile_typescript() {
  local staging
  ensure_typescript
  staging="$(mktemp -d)"
  cp -R "$BP_DIR/lib" "$BP_DIR/package.json" "$BP_DIR/tsconfig.json" "$BP_DIR/tsconfig.build.json" "$staging/"
  (cd "$staging" && "$NODE" "$TSC" -p tsconfig.build.json 2>&1) | indent ||
    fail "TypeScript compilation failed (see above)"
  # Templates and other assets live beside the modules that read them.
  (cd "$staging" && find lib -type f ! -name '*.ts' ! -name '*.md' \
    -exec sh -c 'mkdir -p "dist/$(dirname "$1")" && cp "$1" "dist/$1"' _ {} \;)
  mv "$staging/dist" "$PROXY_DIR/dist"
  rm -rf "$staging"
  info "typescript@$(typescript_in_lock version); $(find "$PROXY_DIR/dist" -name '*.js' | wc -l | tr -d ' ') modules in .mcp-auth-proxy/dist ($(step_seconds))"
}

# Every module loads: a dependency missing from "dependencies" fails the build, not the dyno.
check_proxy_loads() {
  "$NODE" --input-type=module -e 'await import(process.argv[1])' "$PROXY_DIR/dist/lib/start.js" 2>&1 | indent ||
    fail "the compiled proxy does not load (see above)"
}
