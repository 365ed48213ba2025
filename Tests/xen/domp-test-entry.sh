#!/bin/sh
# The VMV domain's entry for scripts/test-xen-domp.sh (never in a production image, which runs
# `vmv serve`): a command channel on port 7000 of its vif, the same protocol as dom0's
# (scripts/xen/dom0-ctl.sh), reached from dom0 only (10.0.3.1, a point-to-point link).
echo "VMV-DOMP test entry: commands on 10.0.3.2:7000"
exec nc -ll -p 7000 -e /etc/vmv/ctl.sh
