#!/usr/bin/env bash
# Prepares a Debian 12 machine to build and test midasfs: the system packages the tests use, the
# FUSE control filesystem, and pydas (the official Midas client) in .venv-pydas.
# Idempotent: what is already there is left alone. Needs root only when packages are missing.
#
#   usage: scripts/setup.sh        (then: cargo test --release)
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(fuse3 rsync attr curl git nginx-light python3-venv)
missing=()
for package in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$package")
  fi
done
if ((${#missing[@]})); then
  if ((EUID != 0)); then
    echo "setup: these packages are missing and installing them needs root: ${missing[*]}" >&2
    exit 1
  fi
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The FUSE control filesystem lets a stuck mount be aborted; the tests do not need it.
connections=/sys/fs/fuse/connections
if [[ -d $connections ]] && ! mountpoint -q "$connections"; then
  mount -t fusectl fusectl "$connections" 2>/dev/null ||
    echo "setup: could not mount fusectl on $connections (fine for the tests)"
fi

installer=../shared/tools/install-pydas.sh
if [[ ! -f $installer ]]; then
  echo "setup: $(pwd)/$installer is missing: the shared directory must sit beside the repository" >&2
  exit 1
fi
bash "$installer" .venv-pydas
echo "setup: done"
