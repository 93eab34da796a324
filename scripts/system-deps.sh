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
    # Another apt or make run may hold dpkg's lock: wait for it (up to 10 min) instead of failing.
    lock=(-o DPkg::Lock::Timeout=600)
    if ! { apt-get "${lock[@]}" update -qq && \
           DEBIAN_FRONTEND=noninteractive apt-get "${lock[@]}" install -y -qq "${missing[@]}" >/dev/null; }; then
        echo "error: apt-get could not install ${missing[*]} (see above; another package manager may hold" \
             "the lock for more than 10 minutes, or the network is down)" >&2
        exit 1
    fi
else
    echo "warning: missing Debian packages: ${missing[*]} (run: sudo apt-get install ${missing[*]})" >&2
fi
