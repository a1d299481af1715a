#!/usr/bin/env bash
# pyflannel's one entry point for a fresh Debian box (as root):
#   ./dev.sh lab     install what is needed, bring up the default lab, show status + ping matrix
#   ./dev.sh test    install what is needed, run the whole test suite
#   ./dev.sh setup   only install (apt packages + .venv)
#   ./dev.sh lint    ruff and mypy over the whole tree
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$(pwd)
VENV="$ROOT/.venv"
APT_PACKAGES=(iproute2 nftables iputils-ping iperf3 containernetworking-plugins podman runc
              procps ethtool python3-venv kmod busybox-static openssl
              wireguard-go wireguard-tools)

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

need_root() {
    if [ "$(id -u)" != 0 ]; then
        echo "pyflannel needs root (network namespaces, netlink): run as root or with sudo" >&2
        exit 1
    fi
}

apt_install() {
    local missing=()
    for p in "${APT_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    say "apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

python_bin() {
    # Any Python >= 3.11 that can make a venv; Debian's own one is the fallback.
    for c in python3.13 python3.12 python3.11 python3; do
        if command -v "$c" >/dev/null && "$c" -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            command -v "$c"; return 0
        fi
    done
    echo /usr/bin/python3
}

setup() {
    need_root
    apt_install
    local stamp="$VENV/.pyflannel-installed"
    if [ ! -x "$VENV/bin/python" ]; then
        say "creating $VENV"
        "$(python_bin)" -m venv "$VENV"
    fi
    if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
        say "pip install -e .[lab,test,dev]"
        "$VENV/bin/pip" install -q --disable-pip-version-check --upgrade pip >/dev/null
        "$VENV/bin/pip" install -q --disable-pip-version-check -e ".[lab,test,dev]"
        touch "$stamp"
    fi
}

cmd=${1:-}
shift || true
case "$cmd" in
    setup) setup ;;
    lab)
        setup
        exec "$VENV/bin/netns-lab" up --demo "$@"
        ;;
    test)
        setup
        # -n 2: the machine has two cores; every test is parallel-safe (own prefixes).
        exec "$VENV/bin/pytest" -n 2 --dist loadgroup -q "$@"
        ;;
    lint)
        setup
        "$VENV/bin/ruff" check .
        "$VENV/bin/mypy" core netlink backends cni flanneld
        # netns-lab/ is the package netns_lab: give mypy that name through a link.
        tmp=$(mktemp -d); ln -s "$ROOT/netns-lab" "$tmp/netns_lab"
        (cd "$tmp" && MYPYPATH="$ROOT" "$VENV/bin/mypy" --config-file "$ROOT/pyproject.toml" -p netns_lab)
        rm -rf "$tmp"
        ;;
    *)
        sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'
        exit 2
        ;;
esac
