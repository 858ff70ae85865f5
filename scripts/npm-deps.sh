# shellcheck shell=bash
# Sourced by the scripts that need npm packages pinned to one version (test fixtures: GitHub's
# OpenAPI description, its webhook examples and signer). They go into one git-ignored folder under
# the repository root, installed with `npm install --prefix`; no install script of theirs runs.
# Needs `node` and `npm`.

# ensure_npm_packages PREFIX NAME@VERSION...
# Installs every NAME at exactly VERSION into PREFIX/node_modules unless each one is there already
# at that version; all are installed in one npm call, so the folder holds exactly this set.
ensure_npm_packages() {
  local prefix="$1" spec name version missing=()
  shift
  for spec in "$@"; do
    name="${spec%@*}"
    version="${spec##*@}"
    if [[ "$(node -p 'require(process.argv[1]).version' "$PWD/$prefix/node_modules/$name/package.json" 2>/dev/null)" != "$version" ]]; then
      missing+=("$spec")
    fi
  done
  if ((${#missing[@]})); then
    echo "scripts/$(basename "$0"): installing ${missing[*]} into $prefix" >&2
    mkdir -p "$prefix"
    npm install --prefix "$prefix" --save-exact --no-audit --no-fund --ignore-scripts --loglevel=error "$@" > /dev/null
  fi
}
