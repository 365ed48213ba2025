#!/usr/bin/env bash
# Xen system test: boots Debian's Xen 4.17 under QEMU (scripts/xen/run.sh) with a PV and a PVH
# guest and `vmv` in dom0, then checks vmv's Xen layer against facts that vmv did not produce:
#   domains   `vmv introspect domains --json` lists each guest with the name and UUID that the
#             guest itself printed (/sys/hypervisor/uuid) and the right type (pv/pvh)
#   vcpu      `vmv introspect vcpu` gives each guest's registers: the idle vCPU's RIP lies in
#             the kernel text the guest printed (_stext.._etext), PVH's EFER has long mode on
#   kernel    `vmv introspect kernel --domain` finds each guest's kernel through foreign mapping,
#             without symbols: release, slide, text and rodata ranges as the guest printed them;
#             measuring twice gives the same Merkle roots
#   frame     a kernel text frame (found with libxc's own xc_translate_foreign_address) maps
#             read-only through vmv, twice with the same SHA-256
#   poke      after a test-only tool writes one byte into that frame from dom0, vmv's SHA-256
#             of it changes, and the guest is still alive; the text root changes, rodata's does
#             not, and exactly the poked page differs (also as `vmv introspect diff` names it)
#   measure   `vmv measure guests --once` (the guest measurer, with dom0's TPM) logs both guests'
#             kernelImage/initrd (= dom0's sha256sum), commandLine, domainConfig and text/rodata
#             roots (= what `vmv introspect kernel` found); a second pass records nothing; after
#             the poke exactly one new record, guest-pv's kernel.text with the poked root; and
#             `vmv log verify` says the log and the TPM's PCR agree
#   denied    a frame the guest does not own gives a per-frame mapping error, not a crash
#   watch     `vmv introspect domains --watch` reports a guest going away and a new one coming
#   tpm       tpm2-tss in dom0 reaches the swtpm TPM (its device TCTI is dlopened, not linked)
#   forward   a dom0 port answers on the host's loopback (QEMU user-network forward)
#   harness   every stage of scripts/xen/run.sh passed, the payload's run.sh included
# Usage: scripts/test-xen.sh [--keep] [--out DIR]    (--keep: leave Xen running at the end)
# Ends with "N passed, M failed"; exit 0 only if all passed. Logs in DIR (default .build/xen/test).
set -uo pipefail
cd "$(dirname "$0")/.."
source scripts/xen/lib.sh   # common.sh, and xen_guest_fact
OUT="$PWD/.build/xen/test"; KEEP=0
while [ $# -gt 0 ]; do
  case "$1" in
    --keep) KEEP=1 ;;
    --out) OUT=$2; shift ;;
    *) echo "test-xen: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
T0=$SECONDS
scripts/setup.sh --xen || { echo "0 passed, 1 failed"; exit 1; }
ensure_swift_on_path
mkdir -p "$OUT"
passed=0; failed=0
check() {  # NAME OK(0/1) DETAIL
  if [ "$2" = 0 ]; then passed=$((passed + 1)); echo "PASS $1: $3"
  else failed=$((failed + 1)); echo "FAIL $1: $3"; fi
}
finish() {
  echo "logs: $OUT (run: $OUT/run/result.txt, serial: $OUT/run/serial.txt); whole test $((SECONDS - T0))s"
  echo "$passed passed, $failed failed"
  [ "$failed" = 0 ]; exit $?
}

# ---- build vmv and the test-only writer, make the dom0 payload
echo "--- build"
swift build --product vmv > "$OUT/build.log" 2>&1 || { check build 1 "swift build failed, see $OUT/build.log"; finish; }
P="$OUT/payload"; rm -rf "$P"; mkdir -p "$P/bin"
strip -o "$P/bin/vmv" .build/debug/vmv
gcc -O2 -Wall -o "$P/bin/xen-poke" Tests/xen/xen-poke.c -lxenctrl -lxenforeignmemory 2>> "$OUT/build.log" ||
  { check build 1 "gcc xen-poke failed, see $OUT/build.log"; finish; }
cp /usr/bin/tpm2 "$P/bin/tpm2"   # links the TCTI loader only: the device TCTI is dlopened
ln -s tpm2 "$P/bin/tpm2_getrandom"
cat > "$P/run.sh" <<'EOF'
#!/bin/sh
# runs in dom0 once the guests are up (scripts/xen/run.sh --payload)
vmv introspect domains
EOF
chmod +x "$P/run.sh"
check build 0 "vmv and the test-only xen-poke ($((SECONDS - T0))s)"

# ---- boot
echo "--- boot Xen under QEMU"
RUN="$OUT/run"; rm -rf "$RUN"   # a stale state file would answer --wait-ready
scripts/xen/run.sh --hold --guests "guest-pv:pv,guest-pvh:pvh" --payload "$P" --forward 8443 --out "$RUN" \
  > "$OUT/run.log" 2>&1 &
RUN_PID=$!
stop_xen() {
  if kill -0 "$RUN_PID" 2>/dev/null; then
    scripts/xen/dom0.sh --out "$RUN" --poweroff >/dev/null 2>&1
    for _ in $(seq 30); do kill -0 "$RUN_PID" 2>/dev/null || break; sleep 1; done
    kill "$RUN_PID" 2>/dev/null; wait "$RUN_PID" 2>/dev/null
  fi
}
[ $KEEP = 1 ] || trap stop_xen EXIT
if ! scripts/xen/dom0.sh --out "$RUN" --wait-ready --timeout 600; then
  stop_xen; check boot 1 "Xen did not come up: $(grep -v PASS "$RUN/result.txt" 2>/dev/null | tr '\n' ';')"; finish
fi
check boot 0 "Xen, dom0 and both guests up ($((SECONDS - T0))s): $(grep -c PASS "$RUN/result.txt") stages passed so far"
dom0() { scripts/xen/dom0.sh --out "$RUN" --timeout 180 -- "$@"; }
fact() { xen_guest_fact "$RUN" "$1" "$2"; }  # GUEST KEY: what the guest printed about itself

# ---- domains: names, UUIDs, types
echo "--- checks"
dom0 'vmv introspect domains --json' > "$OUT/domains.json" 2> "$OUT/domains.err"
ok=1; detail="vmv introspect domains failed: $(cat "$OUT/domains.json" "$OUT/domains.err" | tail -n 3 | tr '\n' ' ')"
if python3 -c 'import json,sys; json.load(open(sys.argv[1]))' "$OUT/domains.json" 2>/dev/null; then
  detail=""
  ok=0
  for g in guest-pv guest-pvh; do
    want_uuid=$(fact $g uuid); want_type=$(fact $g type | tr 'A-Z' 'a-z')
    got=$(python3 - "$OUT/domains.json" "$g" <<'EOF'
import json, sys
for d in json.load(open(sys.argv[1])):
    if d.get("name") == sys.argv[2]:
        print(d["uuid"].lower(), d["type"], d["id"])
EOF
)
    if [ -n "$want_uuid" ] && [ "$got" = "$want_uuid $want_type $(fact $g domid)" ]; then
      detail="$detail $g=$got;"
    else ok=1; detail="$detail $g: vmv says '$got', guest says '$want_uuid $want_type $(fact $g domid)';"; fi
  done
  grep -q '"Domain-0"' "$OUT/domains.json" || { ok=1; detail="$detail no Domain-0;"; }
fi
check domains $ok "$detail"

# ---- vcpu registers
for g in guest-pv guest-pvh; do
  dom0 "vmv introspect vcpu --domain $g --json" > "$OUT/vcpu-$g.json" 2>&1
  res=$(python3 - "$OUT/vcpu-$g.json" "$(fact $g _stext)" "$(fact $g _etext)" "$g" <<'EOF'
import json, sys
try:
    r = json.load(open(sys.argv[1]))
except Exception as e:
    print("1 not JSON: %s" % open(sys.argv[1]).read()[-300:]); sys.exit()
lo, hi = int(sys.argv[2], 16), int(sys.argv[3], 16)
bad = []
if not lo <= r["rip"] < hi: bad.append("rip 0x%x outside _stext..._etext 0x%x..0x%x" % (r["rip"], lo, hi))
if r["pageTableFrame"] == 0: bad.append("no page table frame")
if sys.argv[4].endswith("pvh") and not r["efer"] & (1 << 10): bad.append("EFER.LMA clear: 0x%x" % r["efer"])
if sys.argv[4].endswith("pvh") and not r["cr0"] & (1 << 31): bad.append("CR0.PG clear")
print("1 " + "; ".join(bad) if bad else "0 rip 0x%x in kernel text, page table frame 0x%x, efer 0x%x" % (r["rip"], r["pageTableFrame"], r["efer"]))
EOF
)
  check "vcpu:$g" "${res%% *}" "${res#* }"
done

# ---- kernel: found through foreign mapping, without symbols, where the guest says it is
kernel_check() {  # GUEST FILE  -> "0 detail" or "1 detail"
  python3 - "$2" "$(fact $1 release)" "$(fact $1 _stext)" "$(fact $1 _etext)" "$(fact $1 __start_rodata)" "$(fact $1 __end_rodata)" "$(fact $1 type)" <<'EOF'
import json, sys
try:
    r = json.load(open(sys.argv[1]))
except Exception:
    print("1 not JSON: " + open(sys.argv[1]).read()[-400:].replace("\n", " ")); sys.exit()
release, stext, etext, srod, erod = sys.argv[2], *[int(x, 16) for x in sys.argv[3:7]]
up = lambda v: (v + 4095) & ~4095
want_space = "machine" if sys.argv[7] == "PV" else "guest-physical"
reg = {x["name"]: x for x in r["regions"]}
t, d = reg.get("text"), reg.get("rodata")
slide = stext - 0xffffffff81000000
bad = []
if r["release"] != release: bad.append("release %s, guest says %s" % (r["release"], release))
if int(r["slide"], 16) != slide: bad.append("slide %s, guest's _stext gives 0x%x" % (r["slide"], slide))
if r["frameSpace"] != want_space: bad.append("frame space %s, want %s" % (r["frameSpace"], want_space))
if not t or int(t["virtualStart"], 16) != stext or int(t["virtualEnd"], 16) != up(etext):
    bad.append("text %s-%s, guest says _stext 0x%x _etext 0x%x" % (t and t["virtualStart"], t and t["virtualEnd"], stext, etext))
if not d or int(d["virtualStart"], 16) != srod or int(d["virtualEnd"], 16) != up(erod):
    bad.append("rodata %s-%s, guest says 0x%x-0x%x" % (d and d["virtualStart"], d and d["virtualEnd"], srod, erod))
if bad: print("1 " + "; ".join(bad))
else: print("0 %s, slide %s, text %s-%s (%d pages, root %s…), rodata %s-%s, %s frames" % (release, r["slide"], t["virtualStart"], t["virtualEnd"], t["pageCount"], t["measurement"]["root"][:16], d["virtualStart"], d["virtualEnd"], want_space))
EOF
}
for g in guest-pv guest-pvh; do
  t=$SECONDS
  dom0 "vmv introspect kernel --domain $g --pages --json > /tmp/kernel-$g.json; st=\$?; cat /tmp/kernel-$g.json; exit \$st" > "$OUT/kernel-$g.json" 2>&1
  res=$(kernel_check $g "$OUT/kernel-$g.json")
  check "kernel:$g" "${res%% *}" "${res#* } ($((SECONDS - t))s)"
done
root() { python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(" ".join(x["name"]+"="+x["measurement"]["root"] for x in r["regions"]))' "$1" 2>/dev/null; }
dom0 "vmv introspect kernel --domain guest-pv --pages --json" > "$OUT/kernel-guest-pv-2.json" 2>&1
r1=$(root "$OUT/kernel-guest-pv.json"); r2=$(root "$OUT/kernel-guest-pv-2.json")
[ -n "$r1" ] && [ "$r1" = "$r2" ]
check "kernel:twice" $? "guest-pv measured twice: ${r2:-no roots}"

# ---- measure: the guest measurer records both guests into the measurement log through the TPM
VS="--state /var/lib/vmv --tcti device:/dev/tpmrm0"
logcount() { python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["records"]))' "$1" 2>/dev/null; }
t=$SECONDS
dom0 "mkdir -p /var/lib/vmv && vmv measure guests --once --json $VS" > "$OUT/measure-1.jsonl" 2>&1; rc=$?
dom0 "vmv log show --json --state /var/lib/vmv" > "$OUT/log-1.json" 2>&1
dom0 "sha256sum /guest/vmlinuz /guest/guest.cpio.gz" > "$OUT/sha256.txt" 2>&1
res=$(python3 - "$OUT/log-1.json" "$OUT/sha256.txt" "$rc" "$OUT" guest-pv "$(fact guest-pv uuid)" guest-pvh "$(fact guest-pvh uuid)" <<'EOF'
import json, sys
try:
    log = json.load(open(sys.argv[1]))
except Exception:
    print("1 vmv log show gave no JSON: " + open(sys.argv[1]).read()[-300:].replace("\n", " ")); sys.exit()
sha = {l.split()[1]: l.split()[0] for l in open(sys.argv[2]) if len(l.split()) == 2}
out, bad = sys.argv[4], []
if sys.argv[3] != "0": bad.append("vmv measure guests exited %s" % sys.argv[3])
args = sys.argv[5:]
for g, uuid in zip(args[0::2], args[1::2]):
    recs = [r for r in log["records"] if r.get("domain", {}).get("uuid") == uuid.lower()]
    k = json.load(open("%s/kernel-%s.json" % (out, g)))
    want = {"kernel." + x["name"]: x["measurement"]["root"] for x in k["regions"]}
    got = {r["subject"]: r["region"]["merkleRoot"]["digest"] for r in recs if r["kind"] == "memoryRegion"}
    if got != want: bad.append("%s regions in the log %s, vmv introspect kernel found %s" % (g, got, want))
    by = {r["kind"]: r for r in recs}
    if by.get("kernelImage", {}).get("contentDigest", {}).get("digest") != sha.get("/guest/vmlinuz"):
        bad.append("%s kernelImage %s, sha256sum %s" % (g, by.get("kernelImage"), sha.get("/guest/vmlinuz")))
    if by.get("initrd", {}).get("contentDigest", {}).get("digest") != sha.get("/guest/guest.cpio.gz"):
        bad.append("%s initrd differs from sha256sum" % g)
    if "vmvname=" + g not in by.get("commandLine", {}).get("attributes", {}).get("cmdline", ""):
        bad.append("%s commandLine %s" % (g, by.get("commandLine")))
    if "domainConfig" not in by: bad.append("%s no domainConfig" % g)
print(("1 " + "; ".join(bad)) if bad else "0 %d records: per guest kernelImage, initrd, commandLine, domainConfig, kernel.text/rodata with the roots vmv introspect found; image digests = dom0's sha256sum" % len(log["records"]))
EOF
)
check "measure:first" "${res%% *}" "${res#* } ($((SECONDS - t))s)"
dom0 "vmv measure guests --once --json $VS" > "$OUT/measure-2.jsonl" 2>&1; rc=$?
dom0 "vmv log show --json --state /var/lib/vmv" > "$OUT/log-2.json" 2>&1
n1=$(logcount "$OUT/log-1.json"); n2=$(logcount "$OUT/log-2.json")
[ $rc = 0 ] && [ -n "$n1" ] && [ "$n1" = "$n2" ] && [ "$(grep -c '"recorded":\[\]' "$OUT/measure-2.jsonl")" = 2 ]
check "measure:again" $? "a second pass (a new process: it reads what the log holds) records nothing: $n1 -> $n2 records, rc=$rc"

# ---- frame: map a kernel text frame read-only, twice
G=guest-pv; D=$(fact $G domid); STEXT=$(fact $G _stext)
# a page well inside the text, away from the entry code
VA=$(printf '0x%x' $(( STEXT + 0x200000 )))
FRAME=$(dom0 "xen-poke translate $D $VA" | sed -n 's/.*frame=\(0x[0-9a-f]*\).*/\1/p')
if [ -z "$FRAME" ]; then
  check frame 1 "libxc could not translate $VA of $G"
else
  h1=$(dom0 "vmv introspect frame --domain $G $FRAME" | awk '{print $2}')
  h2=$(dom0 "vmv introspect frame --domain $G $FRAME" | awk '{print $2}')
  [ -n "$h1" ] && [ ${#h1} = 64 ] && [ "$h1" = "$h2" ]
  check frame $? "kernel text $VA -> MFN $FRAME (libxc), vmv SHA-256 $h1 twice the same ('$h2')"

  # ---- poke one byte and see the digest change
  poke=$(dom0 "xen-poke poke $D $VA" 2>&1)
  h3=$(dom0 "vmv introspect frame --domain $G $FRAME" | awk '{print $2}')
  sleep 12  # the guest prints a heartbeat every 10 s: it must still be alive after the write
  alive_before=$(dom0 "grep -c VMV-GUEST-ALIVE /var/log/xen/console/guest-$G.log")
  sleep 11
  alive_after=$(dom0 "grep -c VMV-GUEST-ALIVE /var/log/xen/console/guest-$G.log")
  [ -n "$h3" ] && [ ${#h3} = 64 ] && [ "$h3" != "$h1" ] && [ "${alive_after:-0}" -gt "${alive_before:-0}" ]
  check poke $? "xen-poke: $poke; vmv SHA-256 now $h3; guest heartbeats $alive_before -> $alive_after"

  # ---- the kernel measurement changes, in exactly the poked page
  dom0 "vmv introspect kernel --domain $G --pages --json" > "$OUT/kernel-guest-pv-poked.json" 2>&1
  PVA=$(echo "$poke" | sed -n 's/.*vaddr=\(0x[0-9a-f]*\).*/\1/p')
  res=$(python3 - "$OUT/kernel-guest-pv.json" "$OUT/kernel-guest-pv-poked.json" "${PVA:-0}" <<'EOF'
import json, sys
try:
    a, b = (json.load(open(f)) for f in sys.argv[1:3])
except Exception as e:
    print("1 no measurement: %s" % e); sys.exit()
va = int(sys.argv[3], 16)
ra = {x["name"]: x for x in a["regions"]}; rb = {x["name"]: x for x in b["regions"]}
changed = {}
for n in ra:
    da, db = ra[n]["measurement"]["pageDigests"], rb[n]["measurement"]["pageDigests"]
    changed[n] = [i for i in range(len(da)) if da[i] != db[i]]
start = int(ra["text"]["virtualStart"], 16)
want = (va - start) // 4096
ok = changed["text"] == [want] and changed["rodata"] == [] and ra["text"]["measurement"]["root"] != rb["text"]["measurement"]["root"] \
     and ra["rodata"]["measurement"]["root"] == rb["rodata"]["measurement"]["root"]
print(("0 " if ok else "1 ") + "text root %s… -> %s…, changed text pages %s (poked page %d at 0x%x), rodata pages changed %s" % (
    ra["text"]["measurement"]["root"][:16], rb["text"]["measurement"]["root"][:16], changed["text"], want, start + want * 4096, changed["rodata"]))
EOF
)
  check "kernel:poked" "${res%% *}" "${res#* }"

  # ---- the measurer records exactly the poked region, and the log replays to the TPM's PCR
  dom0 "vmv measure guests --once --json $VS" > "$OUT/measure-3.jsonl" 2>&1; rc=$?
  dom0 "vmv log show --json --state /var/lib/vmv" > "$OUT/log-3.json" 2>&1
  res=$(python3 - "$OUT/log-2.json" "$OUT/log-3.json" "$OUT/kernel-guest-pv-poked.json" "$(fact $G uuid)" "$rc" <<'EOF'
import json, sys
try:
    a, b, k = (json.load(open(f)) for f in sys.argv[1:4])
except Exception as e:
    print("1 no log or measurement: %s" % e); sys.exit()
last = max([r["seq"] for r in a["records"]] or [-1])
new = [r for r in b["records"] if r["seq"] > last]
root = {x["name"]: x["measurement"]["root"] for x in k["regions"]}["text"]
ok = sys.argv[5] == "0" and len(new) == 1 and new[0]["kind"] == "memoryRegion" and new[0]["subject"] == "kernel.text" \
     and new[0]["domain"]["uuid"] == sys.argv[4].lower() and new[0]["region"]["merkleRoot"]["digest"] == root
desc = ["%s %s %s %s" % (r["seq"], r.get("domain", {}).get("name"), r.get("subject"), r.get("region", {}).get("merkleRoot", {}).get("digest", "")[:16]) for r in new]
print(("0 " if ok else "1 ") + "new records after the poke: %s (poked text root %s, rc=%s)" % (desc, root[:16], sys.argv[5]))
EOF
)
  check "measure:poked" "${res%% *}" "${res#* }"
  out=$(dom0 "vmv log verify $VS" 2>&1); rc=$?
  [ $rc = 0 ] && echo "$out" | grep -q "agree"
  check "measure:verify" $? "vmv log verify (rc=$rc): $(echo "$out" | tail -1)"
  dom0 "vmv introspect kernel --domain $G --pages --json > /tmp/after.json; vmv introspect diff /tmp/kernel-$G.json /tmp/after.json" > "$OUT/diff.txt" 2>&1; rc=$?
  [ $rc = 1 ] && grep -q "text page $(( (PVA - STEXT) / 4096 )) at $(printf '0x%016x' $(( PVA & ~4095 )))" "$OUT/diff.txt"
  check "kernel:diff" $? "vmv introspect diff (rc=$rc): $(grep -E 'changed|same' "$OUT/diff.txt" | tr '\n' ' ' | cut -c1-200) $(grep -m1 'text page' "$OUT/diff.txt" | cut -c1-60)"
fi

# ---- denied: a frame the guest does not own
out=$(dom0 "vmv introspect frame --domain $G 0xfffffffff" 2>&1); rc=$?
[ $rc != 0 ] && echo "$out" | grep -q 'xenforeignmemory_map refused it'
check denied $? "rc=$rc: $(echo "$out" | grep -v '^$' | head -2 | tr '\n' ' ')"

# ---- watch: a guest goes away, a new one comes
dom0 'vmv introspect domains --watch --json > /tmp/watch.jsonl 2>&1 & echo $! > /tmp/watch.pid; sleep 3' >/dev/null
dom0 'xl destroy guest-pvh && xl -vvv create /etc/xen/guest-pvh.cfg > /tmp/recreate.log 2>&1 || { grep -q "XZ decompress" /tmp/recreate.log && xl destroy guest-pvh; xl create /etc/xen/guest-pvh.cfg; }; sleep 3; kill $(cat /tmp/watch.pid)' > "$OUT/watch-xl.log" 2>&1
dom0 'cat /tmp/watch.jsonl' > "$OUT/watch.jsonl"
res=$(python3 - "$OUT/watch.jsonl" "$(fact guest-pvh domid)" <<'EOF'
import json, sys
ev = []
for line in open(sys.argv[1]):
    line = line.strip()
    if line.startswith("{"): ev.append(json.loads(line))
old = int(sys.argv[2])
first = [e for e in ev if e["event"] == "introduced" and e["name"] in ("Domain-0", "guest-pv", "guest-pvh")]
rel = [e for e in ev if e["event"] == "released" and e["id"] == old]
new = [e for e in ev if e["event"] == "introduced" and e["name"] == "guest-pvh" and e["id"] != old]
ok = len(first) >= 3 and rel and new
print(("0 " if ok else "1 ") + "%d initial, released d%d: %s, new guest-pvh: %s" % (len(first), old, bool(rel), ["d%d" % e["id"] for e in new]))
EOF
)
check watch "${res%% *}" "${res#* }"

# ---- the TPM in dom0 through tpm2-tss, with its dlopened device TCTI
out=$(dom0 'tpm2_getrandom -T device:/dev/tpmrm0 --hex 16' 2>&1)
echo "$out" | grep -qE '^[0-9a-f]{32}$'
check tpm $? "tpm2_getrandom in dom0 (swtpm via QEMU tpm-tis): $(echo "$out" | tail -1)"

# ---- a dom0 port forwarded to the host's loopback
dom0 'printf "#!/bin/sh\necho vmv-forward-ok\n" > /tmp/fwd.sh; chmod +x /tmp/fwd.sh; nc -ll -p 8443 -e /tmp/fwd.sh > /dev/null 2>&1 &' >/dev/null
HP=$(scripts/xen/dom0.sh --out "$RUN" --port 8443)
got=$(timeout 20 bash -c "exec 3<>/dev/tcp/127.0.0.1/$HP && cat <&3" 2>&1)
[ "$got" = vmv-forward-ok ]
check forward $? "host 127.0.0.1:$HP -> dom0:8443 answered '$got'"

# ---- shut down and check the harness's own stages
if [ $KEEP = 1 ]; then echo "Xen left running: scripts/xen/dom0.sh --out $RUN -- CMD; --poweroff to stop"; finish; fi
stop_xen; trap - EXIT
bad=$(grep -E ' FAIL ' "$RUN/result.txt" | tr '\n' ';')
[ -z "$bad" ]; check harness $? "${bad:-all stages of scripts/xen/run.sh passed ($(grep -a 'time ' "$RUN/result.txt" | sed 's/.*INFO //'))}"
finish
