"""Weight-only quantize against the I/O floors, many repetitions in one run (issue 14's
"weight-only speed on many cores"): the source's page cache warm, every timed step after an
untimed `sync`, the steps of a round in a rotating order, rounds until a time budget is spent.

Floors (same bytes as fp4kit writes, fsynced): `cat` of the source shards to /dev/null (read),
one `dd bs=16M conv=fsync` (buffered write), one `dd oflag=direct` (write without the page cache),
4 parallel `dd`s of a quarter each. fp4kit variants: `quantize --weights-only` (default
structural verify) under the environment switches of io/write_tuning.hpp (which change speed,
never bytes), with FP4KIT_TIMINGS=1 (where the time goes, io/phase_trace.hpp). Output: one row
per step and round, then per step the median, min and max, then the timing lines of each
variant's median run, then a byte comparison of the variants' outputs.

  python3 bench/weight_only_variants.py FP4KIT SRC WORK [BUDGET_S]
"""
import glob
import os
import shutil
import statistics
import subprocess
import sys
import time

# The first is the default; the others override one switch each (the 2026-12-03 lease ran an
# mmap write mode too, since removed: bench/results/weight_only_variants_h200_2026-12-03.txt).
VARIANTS = [
    ("default", {}),
    ("kept tensors whole (before)", {"FP4KIT_KEPT_PIECE_MIB": "0"}),
    ("8 writers", {"FP4KIT_WRITERS": "8"}),
    ("wait for the disk 256 MiB behind", {"FP4KIT_WB_LAG_MIB": "256"}),
]


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def timed(fn):
    os.sync()
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main():
    fp4kit, src, work = sys.argv[1], sys.argv[2], sys.argv[3]
    budget = float(sys.argv[4]) if len(sys.argv) > 4 else 100.0
    start = time.perf_counter()
    os.makedirs(work, exist_ok=True)
    shards = sorted(glob.glob(os.path.join(src, "*.safetensors")))
    in_bytes = sum(os.path.getsize(s) for s in shards)

    def cat():
        for s in shards:
            with open(s, "rb") as f:
                while f.read(16 << 20):
                    pass

    cat()
    # Output size, and a warm-up of the binary and its libraries.
    o = os.path.join(work, "o")
    shutil.rmtree(o, ignore_errors=True)
    run([fp4kit, "quantize", src, o, "--weights-only", "--verify", "none"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    out_bytes = sum(os.path.getsize(p) for p in glob.glob(os.path.join(o, "*.safetensors")))
    shutil.rmtree(o)
    blocks = (out_bytes + (16 << 20) - 1) >> 24
    print(f"input {in_bytes} bytes, output {out_bytes} bytes ({blocks} x 16 MiB for dd)",
          flush=True)

    dd = os.path.join(work, "dd")

    def dd_one(extra):
        def f():
            run(["dd", "if=/dev/zero", f"of={dd}", "bs=16M", f"count={blocks}", "conv=fsync",
                 "status=none"] + extra)
        return f

    def dd4():
        q = (blocks + 3) // 4
        ps = [subprocess.Popen(["dd", "if=/dev/zero", f"of={dd}{i}", "bs=16M", f"count={q}",
                                "conv=fsync", "status=none"]) for i in range(4)]
        for p in ps:
            if p.wait() != 0:
                raise SystemExit("dd failed")

    logs = {}

    def fp4(name, env):
        def f():
            e = dict(os.environ, FP4KIT_TIMINGS="1", **env)
            out = os.path.join(work, "v%d" % [v[0] for v in VARIANTS].index(name))
            r = subprocess.run(["/usr/bin/time", "-f", "TIME %e s, %U s user, %S s system, "
                                "peak RSS %M KB", fp4kit, "quantize", src, out, "--weights-only"],
                               env=e, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            if r.returncode != 0:
                print(r.stdout)
                raise SystemExit(f"{name}: exit {r.returncode}")
            logs.setdefault(name, []).append(r.stdout)
        return f

    def cleanup():
        for p in glob.glob(os.path.join(work, "dd*")):
            os.remove(p)
        for p in glob.glob(os.path.join(work, "v*")):
            shutil.rmtree(p)

    steps = [("cat (read floor)", cat), ("dd + fsync", dd_one([])),
             ("dd oflag=direct", dd_one(["oflag=direct"])), ("4 x dd + fsync", dd4)]
    steps += [(n, fp4(n, e)) for n, e in VARIANTS]
    times = {n: [] for n, _ in steps}
    names = [n for n, _ in steps]
    print("| round | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    r = 0
    last_round = 0.0
    while r == 0 or time.perf_counter() - start + last_round < budget:  # at least one round
        t_round = time.perf_counter()
        row = {}
        k = r % len(steps)
        for n, f in steps[k:] + steps[:k]:  # rotate: no step always first after the floors
            cleanup()
            row[n] = timed(f)
            times[n].append(row[n])
        r += 1
        print(f"| {r} | " + " | ".join(f"{row[n]:.2f}" for n in names) + " |", flush=True)
        last_round = time.perf_counter() - t_round

    print("\n| step | runs | median | min | max |")
    print("|---|---|---|---|---|")
    for n in names:
        t = times[n]
        print(f"| {n} | {len(t)} | {statistics.median(t):.2f} s | {min(t):.2f} s "
              f"| {max(t):.2f} s |")
    for n, _ in VARIANTS:
        t = times[n]
        i = sorted(range(len(t)), key=lambda j: t[j])[len(t) // 2]
        print(f"\n== {n}: run {i + 1} ({t[i]:.2f} s), its timing lines:")
        for line in logs[n][i].splitlines():
            if line.startswith("fp4kit: timing") or line.startswith("TIME"):
                print(line)
    # Every variant writes the same bytes.
    cleanup()
    outs = []
    for i, (n, e) in enumerate(VARIANTS):
        fp4(n, e)()
        outs.append(os.path.join(work, "v%d" % i))
    for i in range(1, len(outs)):
        same = subprocess.run(["diff", "-r", outs[0], outs[i]],
                              stdout=subprocess.DEVNULL).returncode == 0
        print(f"{VARIANTS[i][0]} vs {VARIANTS[0][0]}: {'identical bytes' if same else 'DIFFER'}")
    cleanup()
    print(f"total {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
