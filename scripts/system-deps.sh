#!/usr/bin/env bash
# Install the Debian packages named on the command line when they are missing.
# As root this runs apt-get; otherwise it says what to install and goes on, so the
# tests that need a package can report it themselves.
set -euo pipefail
missing=()
for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    echo "installing Debian packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
else
    echo "warning: missing Debian packages: ${missing[*]} (run: sudo apt-get install ${missing[*]})" >&2
fi
