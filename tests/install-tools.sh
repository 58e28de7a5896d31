#!/bin/sh
# Installs the Debian packages the lab tests need (coturn, dnsmasq, iptables, openssl,
# iproute2, stunnel4, npm; tmux for the live view's test) and node-turn from npm, when
# running as root on a machine with apt-get. Elsewhere it says what is missing, and the
# lab tests skip themselves with that reason (under CI, they fail instead).
set -eu
missing=""
command -v turnserver >/dev/null 2>&1 || missing="$missing coturn"
command -v dnsmasq >/dev/null 2>&1 || [ -x /usr/sbin/dnsmasq ] || missing="$missing dnsmasq-base"
command -v iptables >/dev/null 2>&1 || [ -x /usr/sbin/iptables ] || missing="$missing iptables"
command -v openssl >/dev/null 2>&1 || missing="$missing openssl"
command -v ip >/dev/null 2>&1 || [ -x /usr/sbin/ip ] || missing="$missing iproute2"
# Extra lab servers (ice_engine/lab/nodeturn.py, stunnel.py): without them the lab still
# comes up, and only the tests that need them skip.
command -v stunnel4 >/dev/null 2>&1 || missing="$missing stunnel4"
command -v npm >/dev/null 2>&1 || missing="$missing npm"
command -v tmux >/dev/null 2>&1 || missing="$missing tmux"  # the live view, as a terminal shows it
root=false
[ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && root=true
if [ -n "$missing" ]; then
    if $root; then
        echo "installing:$missing" >&2
        apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
    else
        echo "not installing:$missing (needs root and apt-get); the lab tests will be skipped" >&2
    fi
fi
# node-turn, from npm: a TURN server whose nonces outlive one client 5-tuple.
prefix=/var/lib/ice-engine-lab/npm
version=0.0.6  # ice_engine/lab/topology.py: NODE_TURN_VERSION
if $root && command -v npm >/dev/null 2>&1 \
    && ! grep -q "\"version\": \"$version\"" "$prefix/node_modules/node-turn/package.json" 2>/dev/null; then
    echo "installing: node-turn@$version (npm) in $prefix" >&2
    npm install --silent --no-audit --no-fund --fetch-timeout=30000 --fetch-retries=1 \
        --prefix "$prefix" "node-turn@$version" >/dev/null \
        || echo "node-turn did not install; its lab tests will be skipped" >&2
fi
