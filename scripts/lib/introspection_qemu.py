#!/usr/bin/env python3
"""Ground truth for vmv's kernel locator and page walker (driven by scripts/test-introspection-qemu.sh).

Boots Debian's Linux kernel under qemu-system-x86_64 (TCG) with an initramfs that prints its own
/proc/kallsyms entries (_stext, _etext, __start_rodata, __end_rodata, linux_banner) and the memory
map of a user process that then spins in user space; stops the VM, takes QEMU's own memory dump
(QMP dump-guest-memory) and asks QEMU's monitor (gva2gpa) where a set of kernel and user
addresses live. Then it runs `vmv introspect kernel` and `vmv introspect translate` on the dump
and compares: the locator's slide and ranges with what the guest printed, the page walker with
gva2gpa, and the measured bytes with bytes this script reads from the dump by itself.

Prints PASS/FAIL lines and ends with "N passed, M failed"; exit 0 only if all passed.
"""
import argparse
import hashlib
import json
import os
import re
import socket
import struct
import subprocess
import sys
import time

START_KERNEL = 0xFFFFFFFF81000000   # x86-64 __START_KERNEL: the link address of _stext
PAGE = 4096

results = []


def check(name, ok, detail=""):
    results.append(ok)
    print(("PASS " if ok else "FAIL ") + name + (f": {detail}" if detail else ""), flush=True)
    return ok


class QMP:
    def __init__(self, path, timeout=30):
        deadline = time.time() + timeout
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX)
                self.sock.connect(path)
                break
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.2)
        self.f = self.sock.makefile("rw")
        self._read()
        self.execute("qmp_capabilities")

    def _read(self):
        while True:
            line = self.f.readline()
            if not line:
                raise RuntimeError("QMP connection closed")
            msg = json.loads(line)
            if "event" not in msg:
                return msg

    def execute(self, cmd, **args):
        self.f.write(json.dumps({"execute": cmd, "arguments": args} if args else {"execute": cmd}) + "\n")
        self.f.flush()
        reply = self._read()
        if "error" in reply:
            raise RuntimeError(f"QMP {cmd}: {reply['error']}")
        return reply.get("return")

    def hmp(self, line):
        return self.execute("human-monitor-command", **{"command-line": line})


def boot(args, name, cpu, append, workdir):
    """Boots one guest, returns (facts printed by the guest, registers, dump path, gva2gpa answers)."""
    os.makedirs(workdir, exist_ok=True)
    serial = os.path.join(workdir, "serial.txt")
    qmp_path = os.path.join(workdir, "qmp.sock")
    dump = os.path.join(workdir, "dump.elf")
    cmd = ["qemu-system-x86_64", "-machine", "q35", "-accel", "tcg", "-cpu", cpu, "-m", "256M", "-smp", "1",
           "-display", "none", "-monitor", "none", "-no-reboot", "-serial", f"file:{serial}",
           "-qmp", f"unix:{qmp_path},server=on,wait=off",
           "-kernel", args.kernel, "-initrd", args.initrd,
           "-append", f"console=ttyS0 rdinit=/init loglevel=3 {append}"]
    t0 = time.time()
    qemu = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=open(os.path.join(workdir, "qemu.log"), "w"))
    try:
        text = ""
        while "GT-BUSY-START" not in text:
            if qemu.poll() is not None:
                raise RuntimeError(f"{name}: qemu exited ({qemu.returncode}) before the guest was ready; see {workdir}")
            if time.time() - t0 > args.timeout:
                raise RuntimeError(f"{name}: no GT-BUSY-START after {args.timeout}s; see {serial}")
            time.sleep(0.5)
            text = open(serial, "rb").read().decode("utf-8", "replace") if os.path.exists(serial) else ""
            if "Kernel panic" in text:
                raise RuntimeError(f"{name}: the guest kernel panicked: {text[text.index('Kernel panic'):][:200]}")
        time.sleep(0.5)   # let the busy loop own the CPU
        booted = time.time() - t0
        q = QMP(qmp_path)
        q.execute("stop")
        regs = q.hmp("info registers")
        q.execute("dump-guest-memory", paging=False, protocol=f"file:{dump}")
        facts = parse_facts(text)
        addresses = probe_addresses(facts)
        gpa = {}
        for va in addresses:
            out = q.hmp(f"gva2gpa 0x{va:x}").strip()
            m = re.match(r"gpa: 0x([0-9a-f]+)", out)
            gpa[va] = int(m.group(1), 16) if m else None
        q.execute("quit")
        qemu.wait(timeout=30)
        print(f"  {name}: booted in {booted:.1f}s, dump {os.path.getsize(dump) >> 20} MiB, {len(addresses)} addresses probed", flush=True)
        return facts, regs, dump, gpa
    finally:
        if qemu.poll() is None:
            qemu.kill()
            qemu.wait()


def parse_facts(text):
    facts = {"symbols": {}, "maps": []}
    for line in text.splitlines():
        line = line.strip("\r")
        m = re.match(r"GT-SYM ([0-9a-f]{16}) (\S) (\S+)$", line)
        if m:
            facts["symbols"].setdefault(m.group(3), int(m.group(1), 16))
        m = re.match(r"GT-MAPS ([0-9a-f]+)-([0-9a-f]+) (\S+)", line)
        if m:
            facts["maps"].append((int(m.group(1), 16), int(m.group(2), 16), m.group(3)))
        if line.startswith("GT-UNAME "):
            facts["release"] = line.split(" ", 1)[1]
    return facts


def probe_addresses(facts):
    s = facts["symbols"]
    kernel = [s["_stext"], s["_stext"] + 0x1234, s["_stext"] + 0x20_0000, s["_etext"] - 1, s["_etext"] + PAGE,
              s["__start_rodata"], s["linux_banner"], s["__end_rodata"] - 1, s.get("_sdata", s["__end_rodata"]),
              s["_stext"] - 0x20_0000, 0xFFFFFE0000001000, 0xFFFFFFFFFF600000]
    user = []
    for lo, hi, perms in facts["maps"]:
        user += [lo, lo + 0x10, (lo + hi) // 2 & ~0xF, hi - 8]
    return kernel + user + [0x1000, 0x7FFF_FFFF_F000]


def vmv(args, *argv):
    p = subprocess.run([args.vmv, "introspect", *argv], capture_output=True, text=True)
    return p.returncode, p.stdout, p.stderr


def page_up(v):
    return (v + PAGE - 1) // PAGE * PAGE


class ElfDump:
    """An independent reader of QEMU's ELF dump: PT_LOAD segments by physical address."""

    def __init__(self, path):
        self.f = open(path, "rb")
        hdr = self.f.read(64)
        phoff, = struct.unpack_from("<Q", hdr, 32)
        phentsize, phnum = struct.unpack_from("<HH", hdr, 54)
        self.segments = []
        for i in range(phnum):
            self.f.seek(phoff + i * phentsize)
            p_type, _flags, off, _vaddr, paddr, filesz, _memsz, _align = struct.unpack("<IIQQQQQQ", self.f.read(56))
            if p_type == 1:
                self.segments.append((paddr, filesz, off))

    def read(self, paddr, size):
        for base, filesz, off in self.segments:
            if base <= paddr and paddr + size <= base + filesz:
                self.f.seek(off + paddr - base)
                return self.f.read(size)
        raise KeyError(hex(paddr))


def check_run(args, name, facts, regs, dump, gpa, levels, pti, kaslr):
    s = facts["symbols"]
    need = ["_stext", "_etext", "__start_rodata", "__end_rodata", "linux_banner"]
    if not check(f"{name}: the guest printed its symbols", all(k in s for k in need), ", ".join(f"{k}={s.get(k, 0):#x}" for k in need)):
        return None
    cpl = re.search(r"CPL=(\d)", regs)
    cr3 = re.search(r"CR3=([0-9a-f]+)", regs)
    cpl = int(cpl.group(1)) if cpl else -1
    print(f"  {name}: vCPU at CPL {cpl}, CR3 {cr3.group(1) if cr3 else '?'}")

    rc, out, err = vmv(args, "kernel", "--dump", dump, "--json", "--pages")
    if not check(f"{name}: vmv introspect kernel exits 0", rc == 0, err.strip()[:300]):
        return None
    k = json.loads(out)
    text = next(r for r in k["regions"] if r["name"] == "text")
    rodata = next(r for r in k["regions"] if r["name"] == "rodata")
    slide = s["_stext"] - START_KERNEL
    found = int(k["slide"], 16) if not k["slide"].startswith("-") else -int(k["slide"][1:], 16)
    check(f"{name}: slide", found == slide, f"found {k['slide']}, guest printed _stext {s['_stext']:#x} -> {slide:#x}")
    if kaslr:
        check(f"{name}: KASLR moved the kernel", slide != 0, f"{slide:#x}")
    check(f"{name}: release", k["release"] == facts.get("release"), f"{k['release']} vs uname -r {facts.get('release')}")
    check(f"{name}: text range", (int(text["virtualStart"], 16), int(text["virtualEnd"], 16)) == (s["_stext"], page_up(s["_etext"])),
          f"{text['virtualStart']}-{text['virtualEnd']} vs _stext {s['_stext']:#x}, _etext {s['_etext']:#x}")
    check(f"{name}: rodata range", (int(rodata["virtualStart"], 16), int(rodata["virtualEnd"], 16)) == (s["__start_rodata"], page_up(s["__end_rodata"])),
          f"{rodata['virtualStart']}-{rodata['virtualEnd']} vs __start_rodata {s['__start_rodata']:#x}, __end_rodata {s['__end_rodata']:#x}")
    check(f"{name}: linux_banner address", int(k["bannerAddress"], 16) == s["linux_banner"], f"{k['bannerAddress']}")
    check(f"{name}: {levels}-level paging", k["pagingLevels"] == levels)
    if pti and cpl == 3:
        check(f"{name}: found through the KPTI kernel PGD (vCPU on the user page table)", k["viaKPTIKernelRoot"] is True)

    # The bytes: read _stext's page and the banner straight from the dump with this script's
    # own ELF reader, at the physical addresses the page walk reported.
    elf = ElfDump(dump)
    run = text["physicalRuns"][0]
    text_phys = int(run["physicalStart"], 16)
    if gpa.get(s["_stext"]) is not None:
        check(f"{name}: text's physical start equals gva2gpa(_stext)", text_phys == gpa[s["_stext"]], f"{text_phys:#x}")
    first_page = elf.read(text_phys, PAGE)
    leaf = hashlib.sha256(b"\0" + first_page).hexdigest()
    check(f"{name}: text page 0 digest equals SHA-256(0x00 || page) read independently",
          text["measurement"]["pageDigests"][0] == leaf, leaf[:16])
    banner_run = next(r for r in rodata["physicalRuns"]
                      if int(r["virtualStart"], 16) <= s["linux_banner"] < int(r["virtualStart"], 16) + r["size"])
    banner_phys = int(banner_run["physicalStart"], 16) + s["linux_banner"] - int(banner_run["virtualStart"], 16)
    banner = elf.read(banner_phys, 256).split(b"\n")[0].decode("ascii", "replace")
    check(f"{name}: banner read independently equals the locator's", banner == k["banner"], banner[:60])

    # The page walker against QEMU's monitor, from the vCPU's CR3 exactly as QEMU walks it.
    addrs = sorted(gpa)
    rc, out, err = vmv(args, "translate", "--raw-cr3", "--json", "--dump", dump, *[f"0x{a:x}" for a in addrs])
    ours = {int(r["virtualAddress"], 16): (int(r["physicalAddress"], 16) if r.get("physicalAddress") else None)
            for r in json.loads(out)} if out.strip() else {}
    disagree = [f"{a:#x}: vmv {ours.get(a, 'missing')!s} qemu {gpa[a]!s}" for a in addrs if ours.get(a, -1) != gpa[a]]
    mapped_kernel = sum(1 for a in addrs if a >= 1 << 63 and gpa[a] is not None)
    mapped_user = sum(1 for a in addrs if a < 1 << 63 and gpa[a] is not None)
    check(f"{name}: page walk equals gva2gpa on {len(addrs)} addresses ({mapped_kernel} kernel and {mapped_user} user mapped)",
          not disagree and mapped_user >= 3 and (mapped_kernel >= 8 or pti), "; ".join(disagree[:5]))
    return {"slide": slide, "dump": dump, "text_root": text["measurement"]["root"]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kernel", required=True)
    ap.add_argument("--initrd", required=True)
    ap.add_argument("--vmv", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--timeout", type=int, default=240)
    ap.add_argument("--keep", action="store_true", help="keep the dumps")
    args = ap.parse_args()

    runs = [  # name, -cpu, extra kernel arguments, levels, pti, kaslr
        ("4-level+KPTI", "max,la57=off", "pti=on", 4, True, True),
        ("4-level", "max,la57=off", "nopti", 4, False, True),
        ("5-level+KPTI", "max", "pti=on", 5, True, True),
        ("5-level-nokaslr", "max", "nopti nokaslr", 5, False, False),
    ]
    done = {}
    t0 = time.time()
    for name, cpu, append, levels, pti, kaslr in runs:
        workdir = os.path.join(args.work, name)
        try:
            facts, regs, dump, gpa = boot(args, name, cpu, append, workdir)
        except Exception as e:   # a boot that fails is a failed check, and the others still run
            check(f"{name}: boot and dump", False, str(e))
            continue
        r = check_run(args, name, facts, regs, dump, gpa, levels, pti, kaslr)
        if r:
            r["facts"] = facts
            done[name] = r

    slides = {r["slide"] for n, r in done.items() if n != "5-level-nokaslr"}
    check("at least two different KASLR slides", len(slides) >= 2, ", ".join(f"{n} {r['slide']:#x}" for n, r in done.items()))

    # A System.map at link addresses, from the nokaslr boot's kallsyms, confirms another boot;
    # one that is a page off is refused.
    base = done.get("5-level-nokaslr")
    if check("System.map from the nokaslr boot", base is not None and base["slide"] == 0):
        syms = base["facts"]["symbols"]
        good = os.path.join(args.work, "System.map")
        bad = os.path.join(args.work, "System.map.wrong")
        with open(good, "w") as f:
            for n, v in sorted(syms.items(), key=lambda x: x[1]):
                f.write(f"{v:016x} {'T' if 'text' in n else 'D'} {n}\n")
        with open(bad, "w") as f:
            for n, v in sorted(syms.items(), key=lambda x: x[1]):
                f.write(f"{v + (0x1000 if n == '__end_rodata' else 0):016x} {'T' if 'text' in n else 'D'} {n}\n")
        for name, r in done.items():
            if name == "5-level-nokaslr":
                continue
            rc, out, err = vmv(args, "kernel", "--dump", r["dump"], "--system-map", good, "--json")
            k = json.loads(out) if rc == 0 else {}
            check(f"{name}: --system-map confirms (slide {r['slide']:#x})",
                  rc == 0 and k.get("symbols") is not None and k["regions"][0]["symbolEnd"] == f"{syms['_etext'] + r['slide']:#x}",
                  err.strip()[:200])
            rc, out, err = vmv(args, "kernel", "--dump", r["dump"], "--system-map", bad)
            check(f"{name}: a System.map a page off is refused", rc != 0 and "does not match" in err, err.strip()[:200])
    stub = "/tmp/vmv-introspection-stub.map"
    with open(stub, "w") as f:
        f.write("ffffffffffffffff B The real System.map is in the linux-image-<version>-dbg package\n")
    if done:
        any_dump = next(iter(done.values()))["dump"]
        rc, out, err = vmv(args, "kernel", "--dump", any_dump, "--system-map", stub)
        check("Debian's 83-byte System.map stub is refused with a hint", rc != 0 and "stub" in err, err.strip()[:200])
    os.remove(stub)

    if not args.keep:
        for r in done.values():
            os.remove(r["dump"])
    passed = sum(results)
    print(f"\nintrospection ground truth: {time.time() - t0:.0f}s")
    print(f"{passed} passed, {len(results) - passed} failed")
    sys.exit(0 if passed == len(results) else 1)


if __name__ == "__main__":
    main()
