#!/bin/sh
# Derive this pod's identity and its place in the metadata quorum from the StatefulSet's stable
# names, then exec the node (tini stays PID 1). Pod shoal-4 of the set behind shoal-headless in
# namespace ns, with SHOAL_VOTERS=3:
#   SHOAL_NODE_ID=shoal-4
#   SHOAL_HOST=shoal-4.shoal-headless.ns.svc.cluster.local    (advertised to peers and clients)
#   SHOAL_PEERS_FROM_DNS=shoal-{0..2}.shoal-headless.ns.svc.cluster.local:50052
# Ordinals 0..SHOAL_VOTERS-1 vote in the metadata quorum; every later ordinal joins it as a
# non-voting member by itself, so `kubectl scale` up needs no other step (docs/operations.md
# "Scaling"). The node listens on every interface (SHOAL_LISTEN_HOST, config.env), so
# `kubectl port-forward` and `kubectl exec ... shoal ...` reach it on 127.0.0.1 too.
set -eu
self=$(hostname)                  # the pod name, e.g. shoal-4
fqdn=$(hostname -f)               # shoal-4.shoal-headless.ns.svc.cluster.local
domain=${fqdn#"$self".}           # shoal-headless.ns.svc.cluster.local
set_name=${self%-*}               # shoal
voters=${SHOAL_VOTERS:-3}
case "$voters" in
    1|3|5) ;;
    *) echo "start.sh: SHOAL_VOTERS must be 1, 3 or 5, got $voters" >&2; exit 2 ;;
esac
last=$((voters - 1))
export SHOAL_NODE_ID="$self" SHOAL_HOST="$fqdn" \
    SHOAL_PEERS_FROM_DNS="$set_name-{0..$last}.$domain:${SHOAL_RAFT_PORT:-50052}"
unset SHOAL_VOTERS                # read here only; not a node setting
exec shoal serve "$@"
