#!/bin/sh
# libxl's hotplug script for the VMV domain's vif (domp.cfg: script=/etc/vmv/vif-domp.sh): the
# backend interface gets 10.0.3.1/24, a point-to-point link to the VMV (10.0.3.2); dom0 relays
# the API port to it (docs/domp.md, "Networking"). No bridge, no forwarding: the VMV reaches
# nothing but dom0.
# libxl passes the action (online/offline) and sets $vif (vifD.N) and $XENBUS_PATH.
case "$1" in
  online|add)
    ip link set "$vif" up &&
      ip addr add 10.0.3.1/24 dev "$vif" &&
      xenstore-write "$XENBUS_PATH/hotplug-status" connected ;;
  offline|remove)
    ip link set "$vif" down 2>/dev/null
    exit 0 ;;
esac
