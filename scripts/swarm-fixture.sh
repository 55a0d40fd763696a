#!/usr/bin/env bash
# A real multi-node Docker Swarm on one machine, for the cluster tests and benchmarks.
#
#   scripts/swarm-fixture.sh up [N]    # the main engine as manager (drained) + N workers
#   scripts/swarm-fixture.sh down      # everything `up` made, gone; the main engine as before
#   scripts/swarm-fixture.sh env       # SHIPYARD_SWARM_* settings for the runtime
#   scripts/swarm-fixture.sh kill I    # worker I lost: its engine, containers and link gone
#   scripts/swarm-fixture.sh address   # the manager's address on the bridge (nodes reach it)
#
# Each worker is a dockerd of its own in its own network namespace (addresses X.11.., on a
# bridge made here at X.1, X a /24 that SHIPYARD_SWARM_SUBNET names, e.g. 198.18.7; else the
# first of 198.18.0.0/15 that no route here overlaps: that range is outside the Docker
# engine's address pools, which hand out 172.17-31/16 and 192.168/16 in turn, never reusing
# a freed one at once, so over a long test run the engine's networks pass over any fixed
# address there), with its own data root, exec root, socket and
# cgroup parent (docs/runtimes.md, "A swarm on one machine"). Needs root. Refuses to touch an
# engine that is already in a swarm, so another user's swarm is never left.
set -euo pipefail

ROOT=${SHIPYARD_SWARM_FIXTURE_DIR:-/tmp/shipyard-swarm}
BRIDGE=br-shipyard-sw
NS_PREFIX=shipyard-swn
MARK="$ROOT/fixture"

worker_socket() { echo "unix://$ROOT/n$1/docker.sock"; }

# Three octets of a /24 for the bridge: the setting, else the first free one of 198.18.0.0/15.
pick_subnet() {
  if [[ -n ${SHIPYARD_SWARM_SUBNET:-} ]]; then echo "$SHIPYARD_SWARM_SUBNET"; return; fi
  local b c
  for b in 18 19; do
    for c in $(seq 0 255); do
      if [[ -z "$(ip -4 route show match "198.$b.$c.0/24" | sed '/^default/d')$(ip -4 route show root "198.$b.$c.0/24")" ]]; then
        echo "198.$b.$c"; return
      fi
    done
  done
  echo "no free /24 in 198.18.0.0/15: set SHIPYARD_SWARM_SUBNET" >&2; return 1
}

up() {
  local count=${1:-3}
  if [[ -e $MARK ]]; then
    echo "swarm fixture already up ($ROOT); run '$0 down' first" >&2; exit 1
  fi
  local state
  state=$(docker info --format '{{.Swarm.LocalNodeState}}')
  if [[ $state != inactive ]]; then
    echo "the main Docker engine is already in a swarm ($state): not touching it" >&2; exit 1
  fi
  local SUBNET
  SUBNET=$(pick_subnet)
  mkdir -p "$ROOT"
  echo "$count" > "$MARK"
  echo "$SUBNET" > "$ROOT/subnet"
  ip link add "$BRIDGE" type bridge
  ip addr add "$SUBNET.1/24" dev "$BRIDGE"
  ip link set "$BRIDGE" up
  # Docker sets FORWARD to DROP; traffic between the nodes on this bridge is the swarm's own.
  iptables -I DOCKER-USER -i "$BRIDGE" -o "$BRIDGE" -j ACCEPT
  for i in $(seq 1 "$count"); do
    local ns="$NS_PREFIX$i" d="$ROOT/n$i"
    ip netns add "$ns"
    ip link add "veth-sw$i" type veth peer name eth0 netns "$ns"
    ip link set "veth-sw$i" master "$BRIDGE" up
    ip netns exec "$ns" ip addr add "$SUBNET.$((10 + i))/24" dev eth0
    ip netns exec "$ns" ip link set eth0 up
    ip netns exec "$ns" ip link set lo up
    ip netns exec "$ns" ip route add default via "$SUBNET.1"
    mkdir -p "$d"
    # A registry on the bridge's address is plain HTTP (the tests run Debian's).
    printf '{"insecure-registries": ["%s.0/24"]}\n' "$SUBNET" > "$d/daemon.json"
    # `ip netns exec` remounts /sys and the devices cgroup goes missing; nsenter does not.
    # Nodes have no route to a public registry, nor to a DNS server: a resolver of their own
    # that refuses at once (the node's loopback) makes a pull of an image not in the test
    # registry fail in milliseconds, and the agent then runs the image loaded on the node;
    # the host's resolver would have it wait ~20 s for an answer that never comes.
    printf 'nameserver 127.0.0.1\n' > "$d/resolv.conf"
    setsid nsenter --net="/run/netns/$ns" unshare --uts --mount sh -c "mount --bind $d/resolv.conf /etc/resolv.conf; hostname $ns; exec dockerd \
      --config-file $d/daemon.json --data-root $d/data --exec-root $d/exec \
      --pidfile $d/docker.pid -H $(worker_socket "$i") --cgroup-parent /$ns" \
      > "$d/dockerd.log" 2>&1 < /dev/null &
  done
  for i in $(seq 1 "$count"); do
    for _ in $(seq 1 100); do
      docker -H "$(worker_socket "$i")" version > /dev/null 2>&1 && break
      sleep 0.1
    done
  done
  docker swarm init --advertise-addr "$SUBNET.1" > /dev/null
  local token
  token=$(docker swarm join-token -q worker)
  for i in $(seq 1 "$count"); do
    docker -H "$(worker_socket "$i")" swarm join --token "$token" "$SUBNET.1:2377" > /dev/null
  done
  # Work runs on the workers only: the main engine stays the manager and nothing else.
  docker node update --availability drain "$(docker info --format '{{.Swarm.NodeID}}')" \
    > /dev/null
  echo "swarm up: manager $SUBNET.1, workers: $(seq -s ' ' 1 "$count" | sed "s/\([0-9]*\)/$NS_PREFIX\1/g")"
}

down() {
  local count=3
  [[ -e $MARK ]] && count=$(cat "$MARK")
  docker service ls -q --filter label=org.shipyard.managed=true 2>/dev/null \
    | xargs -r docker service rm > /dev/null 2>&1 || true
  for i in $(seq 1 "$count"); do
    local d="$ROOT/n$i"
    [[ -S $d/docker.sock ]] && timeout 20 docker -H "$(worker_socket "$i")" swarm leave --force \
      > /dev/null 2>&1 || true
    if [[ -s $d/docker.pid ]]; then
      local pid
      pid=$(cat "$d/docker.pid")
      kill "$pid" 2> /dev/null || true
      for _ in $(seq 1 100); do kill -0 "$pid" 2> /dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2> /dev/null || true
    fi
    ip netns del "$NS_PREFIX$i" 2> /dev/null || true
    ip link del "veth-sw$i" 2> /dev/null || true
  done
  if [[ -e $MARK ]]; then
    docker swarm leave --force > /dev/null 2>&1 || true
    # Swarm made this bridge for host-mode ports; remove it unless someone else uses it.
    docker network rm docker_gwbridge > /dev/null 2>&1 || true
  fi
  iptables -D DOCKER-USER -i "$BRIDGE" -o "$BRIDGE" -j ACCEPT 2> /dev/null || true
  ip link del "$BRIDGE" 2> /dev/null || true
  for i in $(seq 1 "$count"); do
    # Container layers were made by the node's engine as root; a mount may linger briefly.
    umount -R "$ROOT/n$i/exec" 2> /dev/null || true
    grep -o " $ROOT/n$i/[^ ]*" /proc/mounts | sort -r | xargs -r -n1 umount -l 2> /dev/null || true
    find /sys/fs/cgroup/*/"$NS_PREFIX$i" -depth -type d -exec rmdir {} + 2> /dev/null || true
  done
  rm -rf "$ROOT"
}

kill_node() {
  local i=$1 d="$ROOT/n$1"
  # As a machine that fails: off the network, then every process of it gone at once (its
  # engine, the engine's containerd and shims, and what runs in its containers).
  ip link set "veth-sw$i" down
  pkill -9 -f -- "$d/" || true
  cat /sys/fs/cgroup/pids/"$NS_PREFIX$i"/*/cgroup.procs 2> /dev/null | xargs -r kill -9 || true
}

env_lines() {
  local count
  count=$(cat "$MARK")
  local engines=()
  for i in $(seq 1 "$count"); do engines+=("$NS_PREFIX$i=$(worker_socket "$i")"); done
  echo "SHIPYARD_RUNTIME=swarm"
  echo "SHIPYARD_SWARM_NODE_ENGINES=$(IFS=,; echo "${engines[*]}")"
}

case ${1:-} in
  up) up "${2:-3}" ;;
  down) down ;;
  env) env_lines ;;
  kill) kill_node "${2:?which worker}" ;;
  address) echo "$(cat "$ROOT/subnet").1" ;;
  *) echo "usage: $0 up [N] | down | env | kill I | address" >&2; exit 2 ;;
esac
