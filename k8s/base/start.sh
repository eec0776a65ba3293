#!/bin/sh
# Derive this pod's identity and its peers from the StatefulSet's stable names, then exec the
# node (tini stays PID 1). Pod shoal-1 of a 3-pod set behind shoal-headless in namespace ns:
#   SHOAL_NODE_ID=shoal-1
#   SHOAL_HOST=shoal-1.shoal-headless.ns.svc.cluster.local    (bind and advertise; in /etc/hosts)
#   SHOAL_PEERS=shoal-0.shoal-headless.ns.svc.cluster.local:50052,shoal-2....:50052
set -eu
self=$(hostname)                  # the pod name, e.g. shoal-1
fqdn=$(hostname -f)               # shoal-1.shoal-headless.ns.svc.cluster.local
domain=${fqdn#"$self".}           # shoal-headless.ns.svc.cluster.local
set_name=${self%-*}               # shoal
peers=""
i=0
while [ "$i" -lt "${SHOAL_CLUSTER_SIZE:?set SHOAL_CLUSTER_SIZE to the replica count}" ]; do
    if [ "$set_name-$i" != "$self" ]; then
        peers="${peers:+$peers,}$set_name-$i.$domain:${SHOAL_RAFT_PORT:-50052}"
    fi
    i=$((i + 1))
done
export SHOAL_NODE_ID="$self" SHOAL_HOST="$fqdn" SHOAL_PEERS="$peers"
exec shoal serve "$@"
