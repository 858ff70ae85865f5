# shellcheck shell=bash
# Sourced by the scripts that run a Python tool pinned to one version, each in its own virtualenv
# under the repository root (tools that clash, like checkov's and python-hcl2's `hcl2`, never
# share one). Needs `python3` with `venv`.

# ensure_pip_package VENV DISTRIBUTION VERSION [REQUIREMENT]
# Creates VENV and installs REQUIREMENT (default DISTRIBUTION==VERSION) into it unless VENV already
# has DISTRIBUTION at exactly VERSION; a venv with another version is upgraded in place.
ensure_pip_package() {
  local venv="$1" distribution="$2" version="$3" requirement="${4:-$2==$3}"
  if ! "$venv/bin/python" -c 'import importlib.metadata as m, sys; sys.exit(m.version(sys.argv[1]) != sys.argv[2])' \
    "$distribution" "$version" 2>/dev/null; then
    echo "scripts/$(basename "$0"): installing $distribution $version into $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "$requirement"
  fi
}
