#!/bin/sh
# `make broker`: Mosquitto with brokers/mosquitto.conf (passwords + ACL), from the repository root.
# Creates brokers/passwd for the coordinator and client-000..client-009 on first use
# (the passwords are written to brokers/passwd.txt, readable only by you).
set -eu
cd "$(dirname "$0")/.."
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || {
    echo "mosquitto not found: apt-get install mosquitto" >&2
    exit 1
}
if [ ! -f brokers/passwd ]; then
    umask 077
    brokers/make_passwords.sh brokers/passwd coordinator \
        client-000 client-001 client-002 client-003 client-004 \
        client-005 client-006 client-007 client-008 client-009 > brokers/passwd.txt
    echo "created brokers/passwd; passwords in brokers/passwd.txt"
fi
mkdir -p runs/broker
exec "$(command -v mosquitto || echo /usr/sbin/mosquitto)" -c brokers/mosquitto.conf
