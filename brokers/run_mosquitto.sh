#!/bin/sh
# `make broker`: Mosquitto with passwords, the per-device ACL and user names as client ids
# (brokers/mosquitto.conf), from the repository root, as root or as a user.
#
#   brokers/run_mosquitto.sh [--host ADDR] [--port N] [--tls] [--tls-dir DIR] [--state DIR] [--passwd FILE]
#                            [--dry-run]
#
#   --host ADDR   address to listen on (default 127.0.0.1, loopback only; 0.0.0.0 for every interface)
#   --port N      port (default 1883, or 8883 with --tls)
#   --tls         a TLS listener instead of plain MQTT, with ca.crt, server.crt and server.key of
#                 --tls-dir (default brokers/tls; make them with brokers/make_tls.sh); clients use
#                 mqtts:// and --ca-file
#   --state DIR   where the broker's files live: its config, a copy of the password file and the
#                 persistence database (default runs/broker)
#   --passwd FILE the password file (default brokers/passwd, created with random passwords for
#                 coordinator and client-000..client-009 on first use, listed in brokers/passwd.txt)
#   --dry-run     print the generated config and exit
# The same settings come from the environment: BROKER_HOST, BROKER_PORT, BROKER_TLS=1,
# BROKER_TLS_DIR, BROKER_STATE (`make broker BROKER_HOST=0.0.0.0 BROKER_TLS=1`).
#
# As root, Mosquitto drops to the user "mosquitto": the state folder is given to that user and the
# password file and TLS key are copied into it with mode 600, so the broker can read them while
# other users cannot.
set -eu
absolute() {  # a path given on the command line, from where the script was called
    case $1 in /*) echo "$1" ;; *) echo "$PWD/$1" ;; esac
}

host=${BROKER_HOST:-127.0.0.1}
port=${BROKER_PORT:-}
tls=${BROKER_TLS:-0}
tls_dir=${BROKER_TLS_DIR:-brokers/tls}
state=${BROKER_STATE:-}
passwd=brokers/passwd
dry_run=0
while [ "$#" -gt 0 ]; do
    case $1 in
        --host) host=$2; shift 2 ;;
        --port) port=$2; shift 2 ;;
        --tls) tls=1; shift ;;
        --tls-dir) tls_dir=$(absolute "$2"); shift 2 ;;
        --state) state=$(absolute "$2"); shift 2 ;;
        --passwd) passwd=$(absolute "$2"); shift 2 ;;
        --dry-run) dry_run=1; shift ;;
        -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
        *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
cd "$(dirname "$0")/.."
root=$(pwd)
[ "$tls" = 1 ] && port=${port:-8883} || port=${port:-1883}
case $port in *[!0-9]*|'') echo "--port must be a number, got '$port'" >&2; exit 2 ;; esac

mosquitto=$(command -v mosquitto || echo /usr/sbin/mosquitto)
[ -x "$mosquitto" ] || { echo "mosquitto not found: apt-get install mosquitto" >&2; exit 1; }

if [ ! -f "$passwd" ]; then
    if [ "$passwd" != brokers/passwd ]; then
        echo "password file $passwd not found (make it with brokers/make_passwords.sh)" >&2
        exit 1
    fi
    (umask 077 && brokers/make_passwords.sh brokers/passwd coordinator \
        client-000 client-001 client-002 client-003 client-004 \
        client-005 client-006 client-007 client-008 client-009 > brokers/passwd.txt)
    echo "created brokers/passwd; passwords in brokers/passwd.txt"
fi
if [ "$tls" = 1 ]; then
    for file in ca.crt server.crt server.key; do
        [ -f "$tls_dir/$file" ] || {
            echo "--tls needs $tls_dir/$file: run brokers/make_tls.sh [NAMES...] first (see brokers/README.md)" >&2
            exit 1
        }
    done
fi

# As root the broker runs as "mosquitto", which must reach the state folder.
run_as=""
if [ "$(id -u)" -eq 0 ]; then
    if id mosquitto >/dev/null 2>&1; then
        run_as=mosquitto
    else
        echo "warning: no user 'mosquitto': the broker keeps running as root" >&2
        run_as=root
    fi
fi
as_broker() {  # run a command as the user the broker will be
    if [ -z "$run_as" ] || [ "$run_as" = root ]; then "$@"; else setpriv --reuid="$run_as" --regid="$run_as" --clear-groups "$@"; fi
}
explicit_state=1
if [ -z "$state" ]; then
    state=runs/broker
    explicit_state=0
fi
mkdir -p "$state"
state=$(cd "$state" && pwd)
if [ -n "$run_as" ] && [ "$run_as" != root ]; then
    chown "$run_as": "$state"
    chmod 700 "$state"
    if ! as_broker test -w "$state"; then
        if [ "$explicit_state" = 1 ] || [ ! -d /var/lib/mosquitto ]; then
            echo "user $run_as cannot reach $state (a parent folder is closed to it): pass --state DIR" \
                 "on a path it can traverse, e.g. /var/lib/mosquitto/fl" >&2
            exit 1
        fi
        state=/var/lib/mosquitto/pynq-fewshot-fl
        mkdir -p "$state" && chown "$run_as": "$state" && chmod 700 "$state"
        echo "note: $root/runs/broker is closed to user $run_as; the broker's state lives in $state"
    fi
fi

# The broker's own copies: readable by the broker's user only.
install_private() {  # SOURCE DEST
    (umask 077 && cp "$1" "$2")
    [ -n "$run_as" ] && chown "$run_as": "$2"
    chmod 600 "$2"
}
install_private "$passwd" "$state/passwd"
cp brokers/acl "$state/acl"
if [ "$tls" = 1 ]; then
    mkdir -p "$state/tls"
    cp "$tls_dir/ca.crt" "$tls_dir/server.crt" "$state/tls/"
    install_private "$tls_dir/server.key" "$state/tls/server.key"
    [ -n "$run_as" ] && chown -R "$run_as": "$state/tls"
fi
config=$state/mosquitto.conf
{
    echo "# Generated by brokers/run_mosquitto.sh from brokers/mosquitto.conf: edit that file, not this one."
    sed -e '/^# ---- the listener/,$d' \
        -e "s|^password_file .*|password_file $state/passwd|" \
        -e "s|^acl_file .*|acl_file $state/acl|" \
        -e "s|^persistence_location .*|persistence_location $state/|" brokers/mosquitto.conf
    [ -n "$run_as" ] && echo "user $run_as"
    echo "listener $port $host"
    sed -n '/^# ---- the listener/,$p' brokers/mosquitto.conf | sed -e '/^#/d' -e '/^listener /d'
    if [ "$tls" = 1 ]; then
        echo "cafile $state/tls/ca.crt"
        echo "certfile $state/tls/server.crt"
        echo "keyfile $state/tls/server.key"
        echo "tls_version tlsv1.2"
    fi
} > "$config"
[ -n "$run_as" ] && chown "$run_as": "$config"
if [ "$dry_run" = 1 ]; then
    cat "$config"
    exit 0
fi
scheme=mqtt
[ "$tls" = 1 ] && scheme=mqtts
echo "mosquitto on $scheme://$host:$port (passwords + ACL$( [ -n "$run_as" ] && echo ", as user $run_as")); state in $state"
exec "$mosquitto" -c "$config"
