#!/usr/bin/env bash
# Provision netsim's lab VM (Debian 12), run by the Vagrantfile as root:
#   provision.sh install   system packages, and netsim from the synced folder into a venv
#   provision.sh example   bring up the example lab "example" (idempotent)
# Debian's own python3-pyroute2 and python3-dnslib are older than netsim needs, so netsim and its
# dependencies go into a venv from PyPI. Environment: NETSIM_SRC (default /vagrant), NETSIM_VENV
# (default /opt/netsim), NETSIM_LAB (default example).
set -euo pipefail

src=${NETSIM_SRC:-/vagrant}
venv=${NETSIM_VENV:-/opt/netsim}
lab=${NETSIM_LAB:-example}

packages=(
  iptables        # iptables-restore/-save and xtables-monitor (nf_tables backend)
  iproute2        # ip netns exec, ss
  nftables        # nft: rule handles for `netsim lab verify`
  util-linux      # setpriv: run the agent, listeners and `lab exec` as other uids
  python3 python3-venv python3-pip
  dnsutils curl   # dig and curl, for poking at the agent and the listeners
  dnsmasq-base    # a resolver of your own on the node side (lab up --upstream), if you want one
)

install() {
  if [ "$(id -u)" != 0 ]; then
    echo "provision.sh: run as root" >&2
    exit 2
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
  if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
  fi
  "$venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
  # A copy, not an editable install: the synced folder is replaced by every `vagrant rsync`.
  "$venv/bin/python" -m pip install -q --disable-pip-version-check "${src}[lab]"
  ln -sf "$venv/bin/netsim" /usr/local/bin/netsim
  netsim --version
}

example() {
  netsim lab up --pod "$src/lab/example/pod.yaml" --name "$lab" --services "$src/lab/example/services.yaml"
  cat <<MSG
Try (vagrant ssh, then):
  sudo netsim lab exec $lab -- getent hosts se.example.com     # answered by the agent: 240.240.x.y
  sudo netsim lab exec $lab -- getent hosts backend            # answered by the lab's cluster DNS
  sudo netsim lab status $lab                                  # rules with counters, recent connections
  sudo netsim lab verify $lab                                  # kernel trace vs netsim trace
  sudo netsim lab down $lab
MSG
}

case "${1:-}" in
  install) install ;;
  example) example ;;
  *) echo "usage: provision.sh install | example" >&2; exit 64 ;;
esac
