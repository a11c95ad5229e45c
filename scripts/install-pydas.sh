#!/usr/bin/env bash
# Installs pydas 0.3.6, the official Python client of Midas, into a virtual environment, so that
# the tests can check `midasfs serve` and the mount against a client that nobody in this project
# wrote. Needs Python 3 with venv (Debian: python3-venv) and PyPI; nothing else is downloaded.
#
# pydas 0.3.6 (its last release) was written for Python 2: two of its import lines are rewritten
# for Python 3 here, and nothing else of it is changed. Its source archive is checked against the
# SHA-256 below before it is used.
#
#   usage: scripts/install-pydas.sh [VENV_DIR]   (default: .venv-pydas at the top of the repository)
#   then:  VENV_DIR/bin/python -c 'import pydas'
#   PYTHON=python3.11 picks the interpreter (default: python3).
set -euo pipefail

venv=${1:-"$(cd "$(dirname "$0")/.." && pwd)/.venv-pydas"}
python=${PYTHON:-python3}
version=0.3.6
sha256=bf57d0b83670af1c157c2055109d5d3b7ab28c0ba0d57d5ada2221c15b4e44d7

fail() {
  echo "install-pydas: $*" >&2
  exit 1
}

if [[ -x $venv/bin/python ]] && "$venv/bin/python" -c 'import pydas.api' 2>/dev/null; then
  echo "install-pydas: pydas already installed in $venv"
  exit 0
fi

command -v "$python" >/dev/null || fail "$python not found: install Python 3 (Debian: apt-get install python3-venv)"
# --clear: a half-made environment (an earlier run that failed) is made again from scratch
"$python" -m venv --clear "$venv" ||
  fail "$python cannot make a virtual environment: install python3-venv (or run scripts/setup.sh)"
pip=("$venv/bin/python" -m pip --disable-pip-version-check --quiet)

# pydas's own dependencies, as its setup.py names them
"${pip[@]}" install requests retrying

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"${pip[@]}" download --no-deps --no-binary :all: "pydas==$version" -d "$work"
archive=$work/pydas-$version.tar.gz
[[ -f $archive ]] || fail "PyPI did not give pydas-$version.tar.gz"
echo "$sha256  $archive" | sha256sum --check --quiet - ||
  fail "pydas-$version.tar.gz does not have the expected SHA-256 $sha256"

tar -xzf "$archive" -C "$work"
src=$work/pydas-$version
sed -i -e 's/^from core import Communicator$/from pydas.core import Communicator/' \
  -e 's/^import session$/from pydas import session/' "$src/pydas/api.py"
if grep -rn '^import session$\|^from core import' "$src/pydas"; then
  fail "the pydas source is not the one this script knows how to adapt"
fi
"${pip[@]}" install --no-deps --use-pep517 "$src"

"$venv/bin/python" - <<'PY'
import pydas, pydas.api, pydas.drivers
assert pydas.drivers.CoreDriver('http://127.0.0.1:1').full_url.endswith('/api/json?method=')
print('install-pydas: pydas', pydas.__version__, 'ready')
PY
