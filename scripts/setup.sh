#!/usr/bin/env bash
# Prepares a Debian 12 (or Ubuntu) machine that has Rust (rustup) to build, try and test midasfs:
# every system package the build, the demo, the tests, the benchmark and the README's examples use,
# and pydas (the official Midas client, for the interoperability tests) in .venv-pydas.
# Idempotent: what is already there is left alone. Runs as root, or as a user with sudo (asked
# only when packages are missing).
#
#   usage: scripts/setup.sh        then: cargo run --release -- demo   or   cargo test --release
#          scripts/setup.sh --no-pydas   the system packages only (CI installs pydas beside the build)
set -euo pipefail
cd "$(dirname "$0")/.."

with_pydas=1
case ${1:-} in
  --no-pydas) with_pydas=0 ;;
  "") ;;
  *)
    echo "usage: scripts/setup.sh [--no-pydas]" >&2
    exit 2
    ;;
esac

# what needs each package:
#   build-essential  the C compiler and the linker `cc` (cargo links with it; SQLite and the TLS
#                    library are compiled from C)
#   ca-certificates  HTTPS to crates.io, PyPI and git servers
#   fuse3            fusermount3, which mounts and unmounts for midasfs (auto_unmount needs it)
#   attr             getfattr/setfattr (the README's examples, the xattr tests)
#   rsync, git       the tests copy trees with rsync and run git inside the mount
#   curl, nginx-light, procps  the benchmark's baselines (scripts/bench.sh, run by CI)
#   python3-venv     Python 3 and its venv, for pydas
packages=(build-essential ca-certificates fuse3 attr rsync git curl nginx-light procps python3-venv)

say() { echo "setup: $*"; }
fail() {
  echo "setup: $*" >&2
  exit 1
}

command -v dpkg-query >/dev/null && command -v apt-get >/dev/null ||
  fail "this script knows Debian and Ubuntu (apt); elsewhere install: ${packages[*]}"

missing=()
for package in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$package")
  fi
done
if ((${#missing[@]})); then
  if ((EUID == 0)); then
    as_root=()
  elif command -v sudo >/dev/null; then
    as_root=(sudo)
  else
    fail "these packages are missing: ${missing[*]}
  installing them needs root, and sudo is not installed: run scripts/setup.sh as root, or as root:
  apt-get install ${missing[*]}"
  fi
  say "installing ${missing[*]}"
  "${as_root[@]}" apt-get update -qq
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  say "system packages already installed"
fi

if ! command -v cargo >/dev/null; then
  say "note: cargo is not on PATH: install Rust with rustup (https://rustup.rs), then open a new shell"
fi
if [[ ! -c /dev/fuse ]]; then
  say "note: /dev/fuse is missing: mounting (the demo, the mount tests) needs it" \
    "(a container needs --device /dev/fuse)"
fi

# The FUSE control filesystem lets a stuck mount be aborted; nothing needs it, so only root tries.
connections=/sys/fs/fuse/connections
if ((EUID == 0)) && [[ -d $connections ]] && ! mountpoint -q "$connections"; then
  mount -t fusectl fusectl "$connections" 2>/dev/null ||
    say "could not mount fusectl on $connections (fine for the tests)"
fi

if ((with_pydas)); then
  scripts/install-pydas.sh "$(pwd)/.venv-pydas"
fi
say "done"
