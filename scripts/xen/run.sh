#!/usr/bin/env bash
# Boots Debian's Xen 4.17 hypervisor with Debian's Linux 6.1 as a PV dom0 under
# qemu-system-x86_64 (TCG, no KVM), starts guests (PV and PVH) from a tiny initramfs that prints
# facts about itself, and reports PASS/FAIL per stage. Nothing is built from source: every input
# is a Debian package (see lib.sh); downloads are cached in ~/.cache/vmv/xen.
#
# Usage: scripts/xen/run.sh [options]
#   --guests SPEC      comma-separated NAME:pv|pvh[:MiB[:LABEL]] (default "guest-pv:pv,guest-pvh:pvh");
#                      LABEL is a FLASK type for `seclabel` (e.g. vmv_guest_t); TYPE+build also
#                      builds the guest under TYPE_building (`init_seclabel`), as sealed guests need
#   --payload DIR      copy DIR to /payload in dom0, with the shared libraries of its ELF files
#                      (and dlopened ones: libgcc_s, tpm2-tss TCTIs); /payload/bin is on PATH;
#                      /payload/run.sh, if present, runs once the guests are up
#   --hold             keep Xen running after the payload until `scripts/xen/dom0.sh --out DIR
#                      --poweroff` (or the timeout); dom0 commands: `scripts/xen/dom0.sh`
#   --no-tpm           do not attach swtpm as a TPM (tpm-tis); default: attached
#   --tpm-state DIR    swtpm state to run the TPM from (e.g. one `vmv tpm` provisioned with an EK
#                      and its certificate); default: a fresh, unprovisioned one in OUT/tpmstate
#   --forward PORT     forward a free loopback port of the host to dom0's PORT (repeatable);
#                      the chosen host ports are written to OUT/ports
#   --xen-image FILE   boot this hypervisor ELF instead of Debian's (e.g. a FLASK build)
#   --policy FILE      pass a FLASK policy as an extra boot module
#   --domp DIR         the VMV as its own domain (docs/domp.md): DIR from scripts/xen/build-domp.sh;
#                      dom0 measures it into PCR 13, hands it the TPM, creates it before the guests
#                      (label vmv_t), grants it xenstore reads of vmv_guest_t/vmv_sealed_t guests'
#                      names, and relays port 8443 to it (add --forward 8443 to reach it)
#   --load-policy FILE a FLASK policy dom0's builder measures into PCR 13 and loads at boot
#                      (flask-loadpolicy; with --domp)
#   --xen-args ARGS    extra Xen command-line arguments (e.g. flask=enforcing)
#   --timeout SECS     whole run, QEMU included (default 900 with --hold, else 600)
#   --out DIR          logs and state (default .build/xen/run)
#
# Exit status 0 only if every stage passed. Logs: OUT/serial.txt (Xen, dom0 and their consoles),
# OUT/result.txt (one line per stage), OUT/guests.txt (the facts each guest printed about itself),
# OUT/qemu-cmd.txt, OUT/qemu.log, OUT/swtpm.log, OUT/state (booting|ready|done|failed).
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/lib.sh"

GUESTS="guest-pv:pv,guest-pvh:pvh"; PAYLOAD=""; HOLD=0; TPM=1; TPM_STATE=""; FORWARDS=(); XEN_IMAGE=""; POLICY=""
XEN_ARGS=""; TIMEOUT=""; OUT="$PWD/.build/xen/run"; DOMP=""; LOAD_POLICY=""
while [ $# -gt 0 ]; do
  case "$1" in
    --guests) GUESTS=$2; shift ;;
    --payload) PAYLOAD=$(readlink -f "$2") || xen_die "no payload folder $2"; shift ;;
    --hold) HOLD=1 ;;
    --no-tpm) TPM=0 ;;
    --tpm-state) TPM_STATE=$(readlink -f "$2") || xen_die "no swtpm state folder $2"; shift ;;
    --forward) FORWARDS+=("$2"); shift ;;
    --xen-image) XEN_IMAGE=$(readlink -f "$2"); shift ;;
    --policy) POLICY=$(readlink -f "$2"); shift ;;
    --domp) DOMP=$(readlink -f "$2"); shift ;;
    --load-policy) LOAD_POLICY=$(readlink -f "$2"); shift ;;
    --xen-args) XEN_ARGS=$2; shift ;;
    --timeout) TIMEOUT=$2; shift ;;
    --out) OUT=$(mkdir -p "$2" && cd "$2" && pwd); shift ;;
    -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) xen_die "unknown option $1 (see --help)" ;;
  esac
  shift
done
[ -n "$TIMEOUT" ] || { [ $HOLD = 1 ] && TIMEOUT=900 || TIMEOUT=600; }
for tool in qemu-system-x86_64 busybox python3 cpio; do
  command -v $tool >/dev/null || xen_die "$tool not found: run scripts/setup.sh --xen"
done
[ $TPM = 0 ] || command -v swtpm >/dev/null || xen_die "swtpm not found: run scripts/setup.sh"
[ -z "$PAYLOAD" ] || [ -d "$PAYLOAD" ] || xen_die "--payload $PAYLOAD is not a folder"
[ -z "$TPM_STATE" ] || [ -e "$TPM_STATE/tpm2-00.permall" ] ||
  xen_die "--tpm-state $TPM_STATE holds no swtpm state (tpm2-00.permall)"
if [ -n "$DOMP" ]; then
  for f in vmlinuz domp.cpio.gz domp.cfg; do [ -s "$DOMP/$f" ] || xen_die "--domp $DOMP has no $f (scripts/xen/build-domp.sh)"; done
  [ $TPM = 1 ] || ! grep -q '^iomem' "$DOMP/domp.cfg" || xen_die "--domp with the TPM passed through needs the TPM (drop --no-tpm)"
  command -v tpm2 >/dev/null || xen_die "tpm2 (tpm2-tools) not found: run scripts/setup.sh"
fi
[ -z "$LOAD_POLICY" ] || [ -n "$DOMP" ] || xen_die "--load-policy is dom0's VMV builder's: use it with --domp"
[ -z "$LOAD_POLICY" ] || [ -s "$LOAD_POLICY" ] || xen_die "no policy $LOAD_POLICY"

mkdir -p "$OUT"
B="$OUT/build"; IMG="$OUT/img"
rm -rf "$B" "$IMG" "$OUT"/{serial.log,serial.txt,result.txt,guests.txt,state,ports,swtpm.log,qemu.log}
mkdir -p "$B" "$IMG"
echo booting > "$OUT/state"
T0=$SECONDS
: > "$OUT/result.txt"
result() {  # STAGE PASS|FAIL|INFO DETAIL
  printf '%-18s %-4s %s\n' "$1" "$2" "$3" | tee -a "$OUT/result.txt"
}

QPID=""; SWTPM_PID=""
cleanup() {
  [ -n "$QPID" ] && kill "$QPID" 2>/dev/null && wait "$QPID" 2>/dev/null
  [ -n "$SWTPM_PID" ] && kill "$SWTPM_PID" 2>/dev/null && wait "$SWTPM_PID" 2>/dev/null
  QPID=""; SWTPM_PID=""
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- inputs
xen_fetch_inputs
if [ -n "$XEN_IMAGE" ]; then cp "$XEN_IMAGE" "$IMG/xen" || xen_die "no hypervisor $XEN_IMAGE"
else xen_hypervisor_elf "$IMG/xen"; fi
cp "$XEN_LINUX/boot/vmlinuz-$KVER" "$IMG/vmlinuz"
[ -z "$POLICY" ] || cp "$POLICY" "$IMG/xenpolicy" || xen_die "no policy $POLICY"
result inputs PASS "xen $(stat -c%s "$IMG/xen") B, linux $KVER, cache $XEN_CACHE ($((SECONDS - T0))s)"

# ---------------------------------------------------------------- guest initramfs
R="$B/guest"; xen_busybox_root "$R"
install -m 755 "$HERE/guest-init.sh" "$R/init"
xen_cpio "$R" "$IMG/guest.cpio.gz"

# ---------------------------------------------------------------- dom0 initramfs
R="$B/dom0"; xen_busybox_root "$R"
XB="$XEN_ROOT/usr/lib/xen-$XEN_SERIES/bin"
mkdir -p "$R/usr/lib/xen-$XEN_SERIES/bin" "$R/etc/xen" "$R/etc/vmv" "$R/guest"
cp -a "$XEN_ROOT/etc/xen/." "$R/etc/xen/"
TOOLS=(xl xenstored xenconsoled xen-init-dom0 xenstore-control libxl-save-helper
       flask-getenforce flask-setenforce flask-loadpolicy flask-get-bool flask-set-bool)
ELFS=()
for t in "${TOOLS[@]}"; do
  cp "$XB/$t" "$R/usr/lib/xen-$XEN_SERIES/bin/"; ln -sf "/usr/lib/xen-$XEN_SERIES/bin/$t" "$R/usr/sbin/$t"
  ELFS+=("$XB/$t")
done
for t in xenstore-read xenstore-write xenstore-ls xenstore-list xenstore-chmod xenstore-rm xenstore-watch; do
  [ -e "$XEN_ROOT/usr/bin/$t" ] && cp "$XEN_ROOT/usr/bin/$t" "$R/usr/bin/" && ELFS+=("$XEN_ROOT/usr/bin/$t")
done
xen_copy_libs "$R" "${ELFS[@]}"
xen_copy_dlopened "$R"
for m in "${XEN_MODULES[@]}"; do cp "$XEN_LINUX/lib/modules/$KVER/kernel/$m" "$R/modules/"; done
install -m 755 "$HERE/dom0-init.sh" "$R/init"
install -m 755 "$HERE/dom0-ctl.sh" "$R/etc/vmv/dom0-ctl.sh"
cp "$IMG/vmlinuz" "$IMG/guest.cpio.gz" "$R/guest/"
[ $HOLD = 1 ] && touch "$R/etc/vmv/hold"
[ $TPM = 1 ] && touch "$R/etc/vmv/tpm"
: > "$R/etc/vmv/guests"
IFS=, read -r -a GUEST_SPECS <<< "$GUESTS"
NAMES=()
for spec in "${GUEST_SPECS[@]}"; do
  IFS=: read -r name type mem label <<< "$spec"
  mem=${mem:-160}
  [[ -z "$label" || "$label" =~ ^[a-z0-9_]+(\+build)?$ ]] || xen_die "guest $name: bad FLASK label '$label'"
  [[ "$name" =~ ^[A-Za-z0-9_-]+$ ]] || xen_die "bad guest name '$name' in --guests"
  case "$type" in pv|pvh) ;; *) xen_die "guest $name: type must be pv or pvh, not '$type'" ;; esac
  [[ "$mem" =~ ^[0-9]+$ ]] || xen_die "guest $name: memory '$mem' is not a number of MiB"
  NAMES+=("$name")
  echo "$name $type $mem ${label:--}" >> "$R/etc/vmv/guests"
  {
    echo "name = \"$name\""
    echo "type = \"$type\""
    echo 'kernel = "/guest/vmlinuz"'
    echo 'ramdisk = "/guest/guest.cpio.gz"'
    echo "extra = \"console=hvc0 rdinit=/init loglevel=4 vmvname=$name\""
    echo "memory = $mem"
    echo 'vcpus = 1'
    echo 'on_crash = "preserve"'
    # PVH under QEMU's emulated SVM: with Xen intercepting RDTSCP, the guest loops on
    # "SVM Insn len emulation failed"; native TSC avoids the intercept.
    [ "$type" = pvh ] && echo 'tsc_mode = "native"'
    if [ -n "$label" ]; then
      echo "seclabel = \"system_u:system_r:${label%+build}\""
      [[ "$label" == *+build ]] && echo "init_seclabel = \"system_u:system_r:${label%+build}_building\""
    fi
    true
  } > "$R/etc/xen/$name.cfg"
done
if [ -n "$DOMP" ]; then
  # The VMV domain's image, dom0's builder, and what it needs: tpm2-tools for the launch
  # measurements, xen-iomem for giving the TPM away, the vif hotplug script.
  mkdir -p "$R/domp"
  cp "$DOMP/vmlinuz" "$DOMP/domp.cpio.gz" "$DOMP/domp.cfg" "$R/domp/"
  install -m 755 "$HERE/dom0-domp.sh" "$R/etc/vmv/dom0-domp.sh"
  install -m 755 "$HERE/vif-domp.sh" "$R/etc/vmv/vif-domp.sh"
  gcc -O2 -Wall -o "$R/usr/sbin/xen-iomem" "$HERE/xen-iomem.c" -lxenctrl 2> "$B/xen-iomem.log" ||
    xen_die "building xen-iomem: $(cat "$B/xen-iomem.log")"
  cp "$(command -v tpm2)" "$R/usr/bin/tpm2"
  for t in tpm2_pcrevent tpm2_pcrread; do ln -sf tpm2 "$R/usr/bin/$t"; done
  xen_copy_libs "$R" "$R/usr/sbin/xen-iomem" "$R/usr/bin/tpm2"
  xen_copy_dlopened "$R" "$R/usr/bin/tpm2"
  [ -z "$LOAD_POLICY" ] || cp "$LOAD_POLICY" "$R/etc/vmv/xenpolicy"
fi
if [ -n "$PAYLOAD" ]; then
  cp -a "$PAYLOAD" "$R/payload"
  mapfile -t PELFS < <(find "$R/payload" -type f -exec sh -c 'head -c4 "$1" | grep -q ELF && echo "$1"' _ {} \;)
  if [ ${#PELFS[@]} -gt 0 ]; then
    xen_copy_libs "$R" "${PELFS[@]}"
    xen_copy_dlopened "$R" "${PELFS[@]}"
  fi
fi
xen_cpio "$R" "$IMG/dom0.cpio.gz"
result initramfs PASS "dom0 $(stat -c%s "$IMG/dom0.cpio.gz") B, guest $(stat -c%s "$IMG/guest.cpio.gz") B, guests: ${NAMES[*]} ($((SECONDS - T0))s)"

# ---------------------------------------------------------------- swtpm
TPMARGS=()
if [ $TPM = 1 ]; then
  ST="$OUT/tpmstate"; rm -rf "$ST"; mkdir -p "$ST"
  # The control socket stays in OUT: a given state folder holds only swtpm's own files.
  swtpm socket --tpm2 --tpmstate dir="${TPM_STATE:-$ST}" --ctrl type=unixio,path="$ST/ctrl.sock" \
    --log file="$OUT/swtpm.log",level=2 &
  SWTPM_PID=$!
  for _ in $(seq 50); do [ -S "$ST/ctrl.sock" ] && break; sleep 0.1; done
  [ -S "$ST/ctrl.sock" ] || xen_die "swtpm did not create its control socket (see $OUT/swtpm.log)"
  TPMARGS=(-chardev socket,id=chrtpm,path="$ST/ctrl.sock" -tpmdev emulator,id=tpm0,chardev=chrtpm
           -device tpm-tis,tpmdev=tpm0)
fi

# ---------------------------------------------------------------- network
CTL_PORT=$(xen_free_port)
FWD="hostfwd=tcp:127.0.0.1:$CTL_PORT-10.0.2.15:7000"
echo "control $CTL_PORT 7000" > "$OUT/ports"
for p in "${FORWARDS[@]}"; do
  [[ "$p" =~ ^[0-9]+$ ]] || xen_die "--forward $p is not a port number"
  hp=$(xen_free_port)
  FWD="$FWD,hostfwd=tcp:127.0.0.1:$hp-10.0.2.15:$p"
  echo "forward $hp $p" >> "$OUT/ports"
done

# ---------------------------------------------------------------- boot
# smap=0: under QEMU 7.2 TCG with -cpu max, emulated SMAP kills the PV dom0 at its first return
# from Xen. com1 is Xen's console; dom0 and its guests reach it through hvc0 and xenconsoled.
XENCMD="console=com1 com1=115200,8n1 dom0_mem=1024M,max:1024M dom0_max_vcpus=1 loglvl=all"
XENCMD="$XENCMD guest_loglvl=all noreboot console_timestamps=boot smap=0 $XEN_ARGS"
DOM0CMD="console=hvc0 earlyprintk=xen rdinit=/init loglevel=5"
# QEMU's -initrd takes multiboot modules separated by ','; a ',' inside arguments is ',,'.
MODS="$IMG/vmlinuz $DOM0CMD,$IMG/dom0.cpio.gz"
[ -z "$POLICY" ] || MODS="$MODS,$IMG/xenpolicy"
LOG="$OUT/serial.log"; : > "$LOG"
QCMD=(qemu-system-x86_64 -machine q35 -accel tcg -cpu max -m 3G -smp 2 -display none -monitor none
  -no-reboot -serial file:"$LOG" -netdev "user,id=n0,$FWD" -device e1000,netdev=n0
  -kernel "$IMG/xen" -append "$XENCMD" -initrd "$MODS" "${TPMARGS[@]}")
printf '%q ' "${QCMD[@]}" > "$OUT/qemu-cmd.txt"; echo >> "$OUT/qemu-cmd.txt"
xen_log "booting Xen under QEMU (timeout ${TIMEOUT}s, logs in $OUT)"
QT0=$SECONDS
timeout "$TIMEOUT" "${QCMD[@]}" > "$OUT/qemu.log" 2>&1 &
QPID=$!
echo "$QPID" > "$OUT/qemu.pid"

# ---------------------------------------------------------------- watch
seen() { grep -qa -- "$1" "$LOG"; }
FATAL='Panic on CPU|Kernel panic|Hardware Dom0 crashed|Hardware Dom0 shutdown|Domain 0 crashed'
reported=""
progress() {  # print each stage line once, as it appears
  local line
  while IFS= read -r line; do
    case "$reported" in *"|$line|"*) continue ;; esac
    reported="$reported|$line|"
    xen_log "$(echo "$line" | tr -d '\r' | sed 's/.*VMV-XEN-STAGE //') ($((SECONDS - QT0))s)"
  done < <(grep -a 'VMV-XEN-STAGE' "$LOG" 2>/dev/null)
}
state=failed
while kill -0 "$QPID" 2>/dev/null; do
  progress
  if seen VMV-XEN-DONE; then sleep 2; state=done; break; fi
  if grep -qaE "$FATAL" "$LOG"; then sleep 2; break; fi
  if [ $HOLD = 1 ] && seen VMV-XEN-READY && [ "$(cat "$OUT/state")" = booting ]; then
    echo ready > "$OUT/state"; xen_log "ready: dom0 takes commands (scripts/xen/dom0.sh --out $OUT)"
  fi
  # No Xen banner after 120 s means QEMU is not booting it at all (wrong image, no multiboot).
  if [ $((SECONDS - QT0)) -gt 120 ] && ! seen "Xen version"; then break; fi
  sleep 2
done
progress
QTIME=$((SECONDS - QT0))
timedout=0; kill -0 "$QPID" 2>/dev/null || { wait "$QPID"; [ $? = 124 ] && timedout=1; }
cleanup
tr -d '\r' < "$LOG" > "$OUT/serial.txt"
S="$OUT/serial.txt"

# ---------------------------------------------------------------- verdicts
g() { grep -qa -- "$1" "$S"; }
stage_line() { grep -a -m1 "VMV-XEN-STAGE $1 " "$S" | sed "s/.*VMV-XEN-STAGE $1 //"; }
report() {  # STAGE [what it means when missing]
  local l; l=$(stage_line "$1")
  if [ -n "$l" ]; then result "$1" "${l%% *}" "${l#* }"; else result "$1" FAIL "${2:-not reached} (see $S)"; fi
}
if g "Xen version"; then result xen PASS "$(grep -a -m1 -o 'Xen version [^ ]*' "$S")"
else result xen FAIL "no Xen banner on the serial console (see $S, $OUT/qemu.log)"; fi
report dom0 "dom0 init never ran"
report toolstack
report network
[ $TPM = 1 ] && report tpm
if [ -n "$DOMP" ]; then
  for st in domp:policy domp:tpm; do grep -qa "VMV-XEN-STAGE $st " "$S" && report "$st"; done
  report domp:launch "dom0's VMV builder did not finish its measurements"
  report domp:create "the VMV domain was not created"
  report domp "the VMV domain did not reach its entry"
fi
for n in "${NAMES[@]}"; do report "guest:$n" "guest not created"; done
grep -a '^VMV-XEN-GUEST ' "$S" | sed 's/^VMV-XEN-GUEST //' > "$OUT/guests.txt"
[ -n "$PAYLOAD" ] && [ -e "$PAYLOAD/run.sh" ] && report payload "payload did not finish"
n_retry=$(grep -ac 'VMV-XEN-RETRY' "$S")
[ "$n_retry" = 0 ] || result xz-retry INFO "$n_retry xl create retried after the XZ decompression flake"
if grep -qaE "$FATAL" "$S"; then result crash FAIL "$(grep -aE -m1 "$FATAL" "$S")"; fi
if [ $timedout = 1 ]; then result timeout FAIL "QEMU ran into the ${TIMEOUT}s timeout"; fi
if g VMV-XEN-DONE; then result shutdown PASS "dom0 finished and powered off"
else result shutdown FAIL "dom0 did not finish"; fi
result time INFO "QEMU ${QTIME}s, whole run $((SECONDS - T0))s"
if grep -q ' FAIL ' "$OUT/result.txt"; then
  echo failed > "$OUT/state"; xen_log "FAILED: see $OUT/result.txt and $S"; exit 1
fi
echo "$state" > "$OUT/state"
exit 0
