#!/usr/bin/env python3
"""Benchmark driver: orchestrator against DVC and Snakemake, side by side in one run.

Main type: `Harness`, which generates three workloads for each tool, runs four scenarios on each
(cold, no-op, one param changed, touched-but-identical input), checks after every run that
exactly the expected stages ran, and writes one table (medians, ratios, peak memory) to stdout
and to docs/benchmarks.md. It also runs the project's own cargo benches (`CARGO_BENCHES`, plus
every `[[bench]]` either Cargo.toml declares) so that one command reproduces every figure.

Workloads (identical shell commands for every tool; every stage first appends its id to a
`ran.log` outside the tools' reach, which is how the harness sees which stages ran):
  W1  a chain of 50 trivial stages (s0 reads a small external seed file)
  W2  1 root + 200 matrix stages (one per value of `i`) + 1 gather over all of them
  W3  4 independent stages, each with its own 1 GiB external input (random bytes)
  W4  W2 with 25x the cells (5,000 by default): does the cost grow like the work? (Its gather
      depends on every cell without reading them: 5,000 paths exceed one shell argument.)
  W5  W1 with 1,000 stages (a long chain)
  W2x W2 written without `matrix:` for orchestrator only (200 stages spelled out, a gather naming
      each output), beside its matrix form
  (DVC and Snakemake run W4/W5 only with --peers-large.)
With W4, orchestrator's scale checks too: `plan` of the 5,002 instances on an empty cache, the
same 5,002 commands merely spawned (`xargs -P <cores>`, the floor for any tool), and the time and
memory to validate a 10^6-cell matrix (bytes per instance).
Scenarios:
  cold     fresh workspace and empty cache (one fresh workspace per repetition)
  noop     nothing changed since the last run
  param    param `g`, read by exactly one stage (the last of W1, the gather of W2, the 4th of
           W3), changes value: that one stage must rerun
  touch    the external inputs get a new mtime, same bytes. Content-hashing tools (orchestrator,
           DVC) must run nothing; Snakemake decides on mtimes (trusting a checksum only for
           inputs under 1 MB) and reruns the W3 stages by design, which the check expects of it.

Only the Python standard library is used (and GNU time, /usr/bin/time, for peak memory: the
largest resident set of any single process of the tool's process tree, its "%M").
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VENV = REPO / "bench" / ".venv"
DOC = REPO / "docs" / "benchmarks.md"
PEER_PINS = ["dvc==3.67.*", "snakemake==9.27.*"]

# The project's own benches. Adding one is one line: (package, bench target, cargo features,
# arguments after `--`).
# A bench listed here but declared in neither Cargo.toml is reported "not available"; one declared
# there but missing here is run too (with its `required-features`).
CARGO_BENCHES = [
    ("orchestrator-stages", "prune", "", ""),
    ("orchestrator-stages", "loader", "", ""),
    ("orchestrator-stages", "ijbc", "torch", ""),
    ("orchestrator-stages", "train", "torch", ""),
]

SCENARIOS = ["cold", "noop", "param", "touch"]
CARGO_HEADING = "## The project's own benches"

GIB = 1 << 30


class BenchError(Exception):
    """A problem that stops the harness, with the fix in its message."""


# ---------------------------------------------------------------------------------------------
# Workloads, described once and rendered for each tool.
#
# A command template uses: {in:NAME} (an input's path, or for a gather input every cell's path),
# {out} (the stage's single output), {i} (the matrix value), {p} and {g} (params), {id} (the
# instance id written to ran.log), {log} (ran.log's absolute path).
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Stage:
    name: str
    cmd: str
    # input name -> ("stage", stage) | ("gather", matrix stage) | ("ext", absolute path)
    inputs: dict
    matrix: bool = False
    params: tuple = ()


@dataclasses.dataclass
class Workload:
    key: str
    title: str
    stages: list
    cells: int  # matrix size (0 without a matrix)
    external: list  # absolute paths of external inputs (touched in the `touch` scenario)
    g_stage: str  # the one stage that reads param `g`

    def instance_ids(self, stage: Stage) -> list:
        if stage.matrix:
            return [f"{stage.name}_{i}" for i in range(self.cells)]
        return [stage.name]

    def all_ids(self) -> set:
        return {iid for s in self.stages for iid in self.instance_ids(s)}

    def expected(self, tool: str, scenario: str) -> set:
        if scenario == "cold":
            return self.all_ids()
        if scenario == "noop":
            return set()
        if scenario == "param":
            return {self.g_stage}
        if scenario == "touch":
            # Snakemake decides on mtimes, except that an input under --max-checksum-file-size
            # (1 MB by default) whose checksum did not change is trusted; every stage here is
            # downstream of an external input.
            if tool == "snakemake" and self.key == "w3":
                return self.all_ids()
            return set()
        raise ValueError(scenario)


def make_w1(data: Path, n: int = 50, key: str = "w1") -> Workload:
    stages = [Stage("s0", "echo {id} >> {log}; cat {in:seed} > {out}; echo 0 >> {out}", {"seed": ("ext", str(data / "seed.txt"))})]
    for k in range(1, n):
        tail = "; echo g={g} >> {out}" if k == n - 1 else ""
        stages.append(Stage(f"s{k}", f"echo {{id}} >> {{log}}; cat {{in:x}} > {{out}}; echo {k} >> {{out}}{tail}", {"x": ("stage", f"s{k - 1}")}, params=("g",) if tail else ()))
    return Workload(key, f"{key.upper()}: chain of {n} trivial stages", stages, 0, [str(data / "seed.txt")], f"s{n - 1}")


def make_w2(data: Path, cells: int = 200, key: str = "w2") -> Workload:
    stages = [
        Stage("root", "echo {id} >> {log}; cat {in:seed} > {out}; echo root >> {out}", {"seed": ("ext", str(data / "seed.txt"))}),
        Stage("cell", "echo {id} >> {log}; cksum {in:x} > {out}; echo {i} {p} >> {out}", {"x": ("stage", "root")}, matrix=True, params=("p",)),
        # Past ~1,000 cells the paths no longer fit in one shell argument (the kernel's 128 KiB
        # per argument), so W4's gather depends on every cell but does not read them.
        Stage("gather", "echo {id} >> {log}; " + ("cat {in:a} > {out}" if cells <= 1000 else f"echo {cells} cells > {{out}}") + "; echo g={g} >> {out}", {"a": ("gather", "cell")}, params=("g",)),
    ]
    return Workload(key, f"{key.upper()}: 1 root + {cells} matrix stages + 1 gather", stages, cells, [str(data / "seed.txt")], "gather")


def make_w3(data: Path, n: int = 4) -> Workload:
    stages = []
    for j in range(n):
        tail = "; echo g={g} >> {out}" if j == n - 1 else ""
        stages.append(Stage(f"big{j}", f"echo {{id}} >> {{log}}; stat -c %s {{in:big}} > {{out}}{tail}", {"big": ("ext", str(data / f"big{j}.bin"))}, params=("g",) if tail else ()))
    return Workload("w3", f"W3: {n} stages, each with its own large input", stages, 0, [str(data / f"big{j}.bin") for j in range(n)], f"big{n - 1}")


def render(cmd: str, sub: dict) -> str:
    def repl(m):
        key = m.group(1)
        if key not in sub:
            raise KeyError(f"template key {{{key}}} has no rendering in {cmd!r}")
        return sub[key]

    return re.sub(r"\{([a-z]+(?::[a-z]+)?)\}", repl, cmd)


# ---------------------------------------------------------------------------------------------
# Tools
# ---------------------------------------------------------------------------------------------


class Tool:
    name = ""

    def __init__(self, harness: "Harness"):
        self.h = harness

    def available(self) -> str | None:
        """None when usable, else why not."""
        raise NotImplementedError

    def version(self) -> str:
        raise NotImplementedError

    def setup(self, wl: Workload, ws: Path, log: Path, g: int) -> None:
        """Write a fresh workspace for `wl` into the (empty) folder `ws`."""
        raise NotImplementedError

    def set_g(self, wl: Workload, ws: Path, log: Path, g: int) -> None:
        raise NotImplementedError

    def command(self, wl: Workload, ws: Path) -> list:
        raise NotImplementedError

    def env(self) -> dict:
        return dict(os.environ)

    def reported_ran(self, output: Path) -> list | None:
        """The instances the tool itself says it ran (from its output), when it says so."""
        return None


class Orchestrator(Tool):
    name = "orchestrator"

    def __init__(self, harness):
        super().__init__(harness)
        self.bin = REPO / "target" / "release" / "orchestrator"
        self._json = None

    def snapshot(self, into: Path):
        """Run a copy: others may rebuild target/release while the harness runs."""
        into.mkdir(parents=True, exist_ok=True)
        self.version_line = self.version()
        for exe in ("orchestrator", "orchestrator-reaper", "orchestrator-stage", "orchestrator-stage-lite"):
            src = self.bin.parent / exe
            if src.exists():
                shutil.copy2(src, into / exe)
        self.bin = into / "orchestrator"

    def available(self):
        if not self.bin.exists():
            return f"{self.bin} is missing: run `make build` (or `cargo build --release -p orchestrator`)"
        return None

    def version(self):
        if getattr(self, "version_line", None):
            return self.version_line
        out = subprocess.run([str(self.bin), "--version"], capture_output=True, text=True).stdout.strip()
        built = datetime.datetime.fromtimestamp(self.bin.stat().st_mtime, datetime.timezone.utc)
        return f"{out} (binary built {built:%Y-%m-%d %H:%M} UTC, repo {git_rev()})"

    def json_events(self) -> bool:
        if self._json is None:
            out = subprocess.run([str(self.bin), "run", "--help"], capture_output=True, text=True).stdout
            self._json = "--message-format" in out
        return self._json

    def yaml(self, wl: Workload, log: Path, g: int) -> str:
        """The workload as a pipeline file.

        A matrix workload is written with `matrix:` and a gather input (`cell.out[*]`); W2x
        writes the same 202 stages without the matrix: cell_0..cell_N as separate stages with the
        same commands, and a gather whose inputs name each of them.
        """
        explicit = wl.cells and wl.key == "w2x"
        lines = [f"name: bench_{wl.key}", f"params: {{ p: 1, g: {g} }}"]
        if wl.cells and not explicit:
            lines.append(f"matrix: {{ i: [{', '.join(str(i) for i in range(wl.cells))}] }}")
        lines.append("stages:")

        def emit(name, cmd, inputs):
            lines.append(f"  {name}:")
            lines.append(f"    run: {json.dumps(cmd)}")
            if inputs:
                lines.append("    inputs: { " + ", ".join(f"{k}: {json.dumps(v)}" for k, v in inputs.items()) + " }")
            lines.append("    outputs: [out]")

        for s in wl.stages:
            sub = {"out": "${outputs.out}", "log": str(log), "p": "${params.p}", "g": "${params.g}", "i": "${matrix.i}"}
            sub["id"] = f"{s.name}_${{matrix.i}}" if s.matrix else s.name
            inputs = {}
            for name, (kind, ref) in s.inputs.items():
                if kind == "gather" and explicit:
                    sub[f"in:{name}"] = " ".join("${inputs." + f"{name}{i}" + "}" for i in range(wl.cells))
                    inputs.update({f"{name}{i}": f"{ref}_{i}.out" for i in range(wl.cells)})
                    continue
                # A gather input is a folder with one entry per cell: `<entry>/out`.
                sub[f"in:{name}"] = "${inputs." + name + "}" + ("/*/out" if kind == "gather" else "")
                inputs[name] = {"stage": f"{ref}.out", "gather": f"{ref}.out[*]"}.get(kind, ref)
            if s.matrix and explicit:
                for i in range(wl.cells):
                    emit(f"{s.name}_{i}", render(s.cmd, {**sub, "i": str(i), "id": f"{s.name}_{i}"}), inputs)
            else:
                emit(s.name, render(s.cmd, sub), inputs)
        return "\n".join(lines) + "\n"

    def setup(self, wl, ws, log, g):
        (ws / "pipeline.yaml").write_text(self.yaml(wl, log, g))

    def set_g(self, wl, ws, log, g):
        self.setup(wl, ws, log, g)

    def reported_ran(self, output):
        if not self.json_events():
            return None
        ran = []
        for line in output.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    ev = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if ev.get("event") == "started":
                    ran.append(ev.get("instance"))
        return ran

    def command(self, wl, ws):
        cmd = [str(self.bin), "run", str(ws / "pipeline.yaml"), "--cache-dir", str(ws / "cache")]
        if self.json_events():
            cmd += ["--message-format", "json"]
        return cmd


class Snakemake(Tool):
    name = "snakemake"

    def exe(self) -> Path:
        return VENV / "bin" / "snakemake"

    def available(self):
        if not self.exe().exists():
            return f"not installed in {VENV} (run `bench/run.sh --install-peers`)"
        return None

    def version(self):
        return subprocess.run([str(self.exe()), "--version"], capture_output=True, text=True).stdout.strip()

    def setup(self, wl, ws, log, g):
        out = ["configfile: 'config.yaml'", ""]
        first = []
        for s in wl.stages:
            first += [f"{s.name}_{{i}}.out".replace("{i}", str(i)) for i in range(wl.cells)] if s.matrix else [f"{s.name}.out"]
        # `all` asks for every output, so a run builds the whole DAG as the other tools do.
        out.append("rule all:")
        out.append("    input: " + ("[" + ", ".join(repr(f) for f in first) + "]" if len(first) <= 60 else repr(first)))
        out.append("")
        for s in wl.stages:
            sub = {"out": "{output.out}", "log": str(log), "p": "{params.p}", "g": "{params.g}", "i": "{wildcards.i}"}
            sub["id"] = f"{s.name}_{{wildcards.i}}" if s.matrix else s.name
            ins = []
            for name, (kind, ref) in s.inputs.items():
                sub[f"in:{name}"] = "{input." + name + "}"
                if kind == "stage":
                    ins.append(f"{name}='{ref}.out'")
                elif kind == "gather":
                    ins.append(f"{name}=expand('{ref}_{{i}}.out', i=range({wl.cells}))")
                else:
                    ins.append(f"{name}={ref!r}")
            out.append(f"rule {s.name}:")
            if ins:
                out.append(f"    input: {', '.join(ins)}")
            out.append(f"    output: out='{s.name}_{{i}}.out'" if s.matrix else f"    output: out='{s.name}.out'")
            if s.params:
                out.append("    params: " + ", ".join(f"{p}=config['{p}']" for p in s.params))
            out.append(f"    shell: {render(s.cmd, sub)!r}")
            out.append("")
        (ws / "Snakefile").write_text("\n".join(out))
        self.set_g(wl, ws, log, g)

    def set_g(self, wl, ws, log, g):
        (ws / "config.yaml").write_text(f"p: 1\ng: {g}\n")

    def command(self, wl, ws):
        return [str(self.exe()), "--cores", str(os.cpu_count() or 1), "--quiet", "all"]


class Dvc(Tool):
    name = "dvc"

    def exe(self) -> Path:
        return VENV / "bin" / "dvc"

    def available(self):
        if not self.exe().exists():
            return f"not installed in {VENV} (run `bench/run.sh --install-peers`)"
        if not shutil.which("git"):
            return "git is not on PATH (DVC needs a git repository)"
        return None

    def version(self):
        return subprocess.run([str(self.exe()), "--version"], capture_output=True, text=True, env=self.env()).stdout.strip()

    def env(self):
        e = dict(os.environ)
        e["DVC_NO_ANALYTICS"] = "1"
        return e

    def setup(self, wl, ws, log, g):
        run_quiet(["git", "init", "-q"], ws)
        run_quiet([str(self.exe()), "init", "-q"], ws, self.env())
        # DVC keeps its stat cache (the "state" db) under a site cache folder keyed by repo path,
        # outside the repo: keep it inside the workspace so that a cold run really is cold.
        run_quiet([str(self.exe()), "config", "--local", "core.site_cache_dir", str(ws / ".dvc-site")], ws, self.env())
        stages = {}
        for s in wl.stages:
            deps, sub = [], {"log": str(log), "p": "${p}", "g": "${g}", "i": "${item}"}
            for name, (kind, ref) in s.inputs.items():
                if kind == "stage":
                    paths = [f"{ref}.out"]
                elif kind == "gather":
                    paths = [f"{ref}_{i}.out" for i in range(wl.cells)]
                else:
                    paths = [ref]
                deps += paths
                sub[f"in:{name}"] = " ".join(paths)
            out = f"{s.name}_${{item}}.out" if s.matrix else f"{s.name}.out"
            sub["out"] = out
            sub["id"] = f"{s.name}_${{item}}" if s.matrix else s.name
            body = {"cmd": render(s.cmd, sub), "deps": deps, "outs": [out]}
            if s.params:
                body["params"] = list(s.params)
            stages[s.name] = {"foreach": list(range(wl.cells)), "do": body} if s.matrix else body
        # JSON is YAML: no YAML library needed to write dvc.yaml.
        (ws / "dvc.yaml").write_text(json.dumps({"stages": stages}, indent=1) + "\n")
        self.set_g(wl, ws, log, g)

    def set_g(self, wl, ws, log, g):
        (ws / "params.yaml").write_text(f"p: 1\ng: {g}\n")

    def command(self, wl, ws):
        return [str(self.exe()), "repro", "--quiet"]


def run_quiet(cmd, cwd, env=None):
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        raise BenchError(f"`{shlex.join(cmd)}` in {cwd} failed ({r.returncode}): {r.stderr.strip()[-2000:]}")


def git_rev() -> str:
    r = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    if r.returncode != 0:
        return "unknown"
    # The harness's own output does not count: it is rewritten by the run being described.
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", f":!{DOC.relative_to(REPO)}"], cwd=REPO, capture_output=True, text=True).stdout
    # Which files, so that a surprise can be traced (`XY path`: a whole-output strip would cut
    # the first path's first letter when X is a space).
    files = [line[3:] for line in dirty.splitlines() if line.strip()]
    return r.stdout.strip() + (f"+dirty ({', '.join(files)})" if files else "")


# ---------------------------------------------------------------------------------------------
# Measuring
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Run:
    secs: float
    maxrss_kib: int
    rc: int
    ran: list  # instance ids from ran.log, in order
    ok: bool
    note: str = ""
    cpu: float = 0.0  # user + system seconds of the whole process tree


def self_rchar() -> int | None:
    """Bytes read through read(2) by this process and every child it has reaped."""
    try:
        for line in Path("/proc/self/io").read_text().splitlines():
            if line.startswith("rchar:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


GNU_TIME = "/usr/bin/time"


def timed(cmd: list, cwd: Path, env: dict, out_path: Path, wrap: list | None = None) -> tuple:
    """Run `cmd`, return (wall seconds, peak RSS KiB, exit code, CPU seconds user + system).

    The peak comes from GNU time when it is there: a child forked straight from this Python
    process inherits its address space until exec, and Linux folds that pre-exec high-water mark
    into the child's ru_maxrss, so wait4() here would report at least the driver's own RSS.
    GNU time forks the tool from a small process. Its start costs about a millisecond, the same
    for every tool.
    """
    rss_file = out_path.with_suffix(".rss")
    pre = [GNU_TIME, "-f", "%M %U %S", "-o", str(rss_file)] if os.access(GNU_TIME, os.X_OK) else []
    with open(out_path, "wb") as out:
        t0 = time.perf_counter()
        p = subprocess.Popen(pre + (wrap or []) + cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        _, status, ru = os.wait4(p.pid, 0)
        secs = time.perf_counter() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
    rss, cpu = ru.ru_maxrss, ru.ru_utime + ru.ru_stime
    if pre:
        try:
            # GNU time writes "Command exited with non-zero status N" first when the tool fails.
            m, u, sy = rss_file.read_text().split()[-3:]
            rss, cpu = int(m), float(u) + float(sy)
        except (OSError, ValueError):
            pass
    return secs, rss, p.returncode, cpu


def median(xs):
    return statistics.median(xs) if xs else None


@dataclasses.dataclass
class Cell:
    """All repetitions of one (tool, workload, scenario)."""

    runs: list = dataclasses.field(default_factory=list)
    skipped: str = ""

    def secs(self):
        return median([r.secs for r in self.runs if r.rc == 0])

    def cpu(self):
        return median([r.cpu for r in self.runs if r.rc == 0])

    def rss_mib(self):
        good = [r.maxrss_kib for r in self.runs if r.rc == 0]
        return max(good) / 1024 if good else None

    def failed(self):
        return [r for r in self.runs if not r.ok]


class Harness:
    def __init__(self, args):
        self.a = args
        self.tmp = Path(args.tmp).resolve() if args.tmp else Path(tempfile.mkdtemp(prefix="orch-bench-"))
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.data = self.tmp / "data"
        self.data.mkdir(exist_ok=True)
        self.results = {}  # (tool, wl, scenario) -> Cell
        self.notes = []
        self.tools = []
        self.skipped_tools = {}
        self.workloads = []
        self.extra = {}  # free-form measurements for the report

    def say(self, msg):
        print(msg, flush=True)

    # -- set-up --------------------------------------------------------------------------------

    def install_peers(self):
        if not (VENV / "bin" / "python").exists():
            self.say(f"creating {VENV}")
            subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        self.say(f"installing {' '.join(PEER_PINS)} into {VENV}")
        subprocess.run([str(VENV / "bin" / "pip"), "install", "-q", *PEER_PINS], check=True)

    def pick_tools(self):
        wanted = [t.strip() for t in self.a.tools.split(",") if t.strip()]
        known = {"orchestrator": Orchestrator, "dvc": Dvc, "snakemake": Snakemake}
        for name in wanted:
            if name not in known:
                raise BenchError(f"--tools: unknown tool {name!r}; choose from {', '.join(known)}")
            tool = known[name](self)
            why = tool.available()
            if why is None and name == "orchestrator":
                tool.snapshot(self.tmp / "bin")
            if why:
                self.skipped_tools[name] = why
                self.say(f"skipping {name}: {why}")
            else:
                self.tools.append(tool)

    def make_data(self):
        (self.data / "seed.txt").write_text("seed\n")
        wls = [w.strip() for w in self.a.workloads.split(",") if w.strip()]
        for w in wls:
            if w not in ("w1", "w2", "w3", "w4", "w5"):
                raise BenchError(f"--workloads: unknown workload {w!r}; choose from w1, w2, w3, w4, w5")
        if "w1" in wls:
            self.workloads.append(make_w1(self.data))
        if "w2" in wls:
            self.workloads.append(make_w2(self.data, self.a.cells))
            self.workloads.append(make_w2(self.data, self.a.cells, "w2x"))
        if "w4" in wls:
            # 25 x W2 (5,000 cells by default): cost should grow like the work.
            self.workloads.append(make_w2(self.data, 25 * self.a.cells, "w4"))
        if "w5" in wls:
            self.workloads.append(make_w1(self.data, 100 if self.a.quick else 1000, "w5"))
        if "w3" in wls:
            size = int(self.a.w3_gib * GIB)
            need = 4 * size + 2 * GIB
            free = shutil.disk_usage(self.tmp).free
            if free < need:
                self.notes.append(f"W3 skipped: {self.tmp} has {free / GIB:.1f} GiB free, W3 needs {need / GIB:.1f} GiB (4 inputs + 2 GiB margin); pass --tmp DIR on a larger disk or --w3-gib SMALLER")
                self.say(self.notes[-1])
            else:
                self.say(f"writing 4 x {size / GIB:g} GiB of random bytes into {self.data} ({free / GIB:.0f} GiB free)")
                block = 16 << 20
                for j in range(4):
                    seedblk = os.urandom(min(block, size))
                    with open(self.data / f"big{j}.bin", "wb") as f:
                        left = size
                        while left > 0:
                            n = min(left, len(seedblk))
                            f.write(seedblk[:n])
                            left -= n
                    # Each 16 MiB block repeats; hashers do not dedupe, so the cost is that of
                    # distinct bytes, and the files differ from each other.
                # Written back before any timing starts, so no run pays for the writeback.
                os.sync()
                self.workloads.append(make_w3(self.data))
                self.w3_bytes = 4 * size

    # -- running -------------------------------------------------------------------------------

    def reps_for(self, tool, wl, scenario):
        if tool.name == "dvc" and wl.key == "w2" and scenario == "cold":
            return self.a.dvc_w2_cold_reps
        return self.a.reps

    def one(self, tool, wl, scenario, ws, log, runlogs, wrap=None):
        log.write_text("")
        k = len(list(runlogs.glob("*.out")))
        secs, rss, rc, cpu = timed(tool.command(wl, ws), ws, tool.env(), runlogs / f"{scenario}-{k}.out", wrap)
        ran = [x for x in log.read_text().split() if x]
        expected = wl.expected(tool.name, scenario)
        note = ""
        ok = rc == 0 and sorted(ran) == sorted(expected)
        if rc != 0:
            tail = (runlogs / f"{scenario}-{k}.out").read_text(errors="replace").strip().splitlines()[-6:]
            note = f"exit {rc}: " + " | ".join(tail)
        if ok:
            reported = tool.reported_ran(runlogs / f"{scenario}-{k}.out")
            if reported is not None and len(reported) != len(ran):
                ok = False
                note = f"stage commands ran {len(ran)} times but the tool's events report {len(reported)} started: {reported[:5]}"
        elif rc == 0:
            extra = sorted(set(ran) - expected)
            missing = sorted(expected - set(ran))
            dup = len(ran) - len(set(ran))
            note = f"ran {len(ran)} stages, expected {len(expected)}" + (f"; unexpected {extra[:5]}" if extra else "") + (f"; missing {missing[:5]}" if missing else "") + (f"; {dup} ran twice" if dup else "")
        return Run(secs, rss, rc, ran, ok, note, cpu)

    def fresh(self, tool, wl, base, log, g):
        ws = base / "ws"
        if ws.exists():
            # Moved aside, never deleted while anything is measured (see `empty_trash`).
            trash = base / "trash"
            trash.mkdir(exist_ok=True)
            ws.rename(trash / f"ws{time.time_ns()}")
        ws.mkdir(parents=True)
        tool.setup(wl, ws, log, g)
        return ws

    def bench(self, tool, wl):
        base = self.tmp / tool.name / wl.key
        runlogs = base / "logs"
        runlogs.mkdir(parents=True, exist_ok=True)
        log = base / "ran.log"
        g = 1
        cells = {s: Cell() for s in SCENARIOS}
        for s in SCENARIOS:
            self.results[(tool.name, wl.key, s)] = cells[s]
        ws = None
        for r in range(self.reps_for(tool, wl, "cold")):
            g = 1
            ws = self.fresh(tool, wl, base, log, g)
            cells["cold"].runs.append(self.one(tool, wl, "cold", ws, log, runlogs))
            self.progress(tool, wl, "cold", cells["cold"].runs[-1])
        if cells["cold"].runs[-1].rc != 0:
            for s in SCENARIOS[1:]:
                cells[s].skipped = "cold run failed"
            self.empty_trash(base)
            return
        for _ in range(self.a.reps):
            cells["noop"].runs.append(self.one(tool, wl, "noop", ws, log, runlogs))
            self.progress(tool, wl, "noop", cells["noop"].runs[-1])
        for _ in range(self.a.reps):
            g += 1
            tool.set_g(wl, ws, log, g)
            cells["param"].runs.append(self.one(tool, wl, "param", ws, log, runlogs))
            self.progress(tool, wl, "param", cells["param"].runs[-1])
        for _ in range(self.a.reps):
            # A new mtime that cannot equal the old one even on coarse-timestamp filesystems.
            now = time.time_ns()
            for p in wl.external:
                st = os.stat(p)
                os.utime(p, ns=(now, max(now, st.st_mtime_ns + 1_000_000_000)))
            cells["touch"].runs.append(self.one(tool, wl, "touch", ws, log, runlogs))
            self.progress(tool, wl, "touch", cells["touch"].runs[-1])
        if tool.name == "orchestrator" and wl.key == "w3":
            self.check_noop_reads(tool, wl, ws, log, runlogs)
        if tool.name == "orchestrator" and self.a.profile:
            self.profile_noop(tool, wl, ws, log, runlogs)
            self.profile_cold(tool, wl, base, log, runlogs)
        self.empty_trash(base)

    def profile_noop(self, tool, wl, ws, log, runlogs):
        """One more no-op run under `perf record --call-graph dwarf`: the engine's own functions,
        inclusive (a no-op is pure engine time, so user-space call chains are what matter)."""
        if not shutil.which("perf"):
            return
        data = runlogs / "noop.perf"
        r = self.one(tool, wl, "noop", ws, log, runlogs, wrap=["perf", "record", "-q", "-F", "20000", "--call-graph", "dwarf,32768", "-o", str(data), "--"])
        if r.rc != 0:
            self.extra.setdefault("profile_noop", {})[wl.key] = f"profiled run failed: {r.note}"
            return
        out = subprocess.run(["perf", "report", "-i", str(data), "--stdio", "-g", "none", "--children", "--sort", "sym", "--comm=orchestrator,tokio-rt-worker"], capture_output=True, text=True).stdout
        rows, seen = [], set()
        for ln in out.splitlines():
            m = re.match(r"\s*([\d.]+)%\s+[\d.]+%\s+\[\.\]\s+((?:orchestrator|sled|yaml_rust2|blake3)::\S+)$", ln)
            # Inlined frames repeat their caller's line; one line per function is enough.
            if m and m.group(2) not in seen and float(m.group(1)) >= 2.0:
                seen.add(m.group(2))
                rows.append(f"{float(m.group(1)):6.1f}%  {m.group(2)}")
        text = [f"no-op run under perf: {r.secs * 1000:.0f} ms wall, {r.cpu * 1000:.0f} ms CPU; engine functions, inclusive, >= 2 % of samples:"] + rows[:25]
        self.extra.setdefault("profile_noop", {})[wl.key] = "\n".join(text)

    def profile_cold(self, tool, wl, base, log, runlogs):
        """One more cold run under `perf record -g`: where the time goes, by process and by
        the engine's system calls."""
        if not shutil.which("perf"):
            self.extra.setdefault("profile", {})[wl.key] = "perf not found (apt-get install linux-perf)"
            return
        ws = self.fresh(tool, wl, base, log, 1)
        data = runlogs / "cold.perf"
        r = self.one(tool, wl, "cold", ws, log, runlogs, wrap=["perf", "record", "-q", "-F", "2000", "-g", "-o", str(data), "--"])
        if r.rc != 0:
            self.extra.setdefault("profile", {})[wl.key] = f"profiled run failed: {r.note}"
            return

        def report(*args, top):
            out = subprocess.run(["perf", "report", "-i", str(data), "--stdio", "-g", "none", *args], capture_output=True, text=True).stdout
            rows = [ln.rstrip() for ln in out.splitlines() if ln.strip() and not ln.startswith("#")]
            return rows[:top]

        engine = "--comm=orchestrator,tokio-rt-worker"
        parts = [f"cold run under perf: {r.secs:.2f} s wall, {r.cpu:.2f} s CPU", "", "samples by process and object:"]
        parts += report("--no-children", "--sort", "comm,dso", top=12)
        parts += ["", "engine threads (orchestrator, tokio-rt-worker), inclusive, by system call / fault:"]
        parts += [ln for ln in report("--children", engine, "--sort", "sym", top=400) if re.search(r"__x64_sys_|__do_sys_|asm_exc_page_fault", ln)][:12]
        parts += ["", "engine threads, hottest symbols (self):"]
        parts += report("--no-children", engine, "--sort", "sym", top=12)
        self.extra.setdefault("profile", {})[wl.key] = "\n".join(parts)

    def empty_trash(self, base):
        """Deletes the workspaces of earlier repetitions only when they hold few inodes (W3's
        large files: disk space). The rest stays until the harness ends: on ext4 without a
        journal (this machine's disk), allocating an inode scans past every inode of its group
        deleted in the last 60 s, or 360 s while the inode table block is not yet written back
        (`recently_deleted()` in fs/ext4/ialloc.c, RECENTCY_MIN 60 / RECENTCY_DIRTY 300); a
        deleted workspace of 5,000 cells would bill that scan, growing with each deletion, to
        every cold run of whichever tool came next for minutes."""
        trash = base / "trash"
        if not trash.exists():
            return
        inodes = sum(1 + len(files) for _, _, files in os.walk(trash))
        if inodes <= 1000:
            shutil.rmtree(trash, ignore_errors=True)

    def check_noop_reads(self, tool, wl, ws, log, runlogs):
        """Does a no-op run open the large inputs? (strace: a read through mmap is invisible to
        rchar, an open is not.) Also the bytes it reads through read(2)."""
        before = self_rchar()
        r = self.one(tool, wl, "noop", ws, log, runlogs)
        after = self_rchar()
        if before is not None and after is not None:
            self.extra["w3_noop_rchar"] = after - before
        if shutil.which("strace"):
            trace = runlogs / "noop-strace.txt"
            r2 = self.one(tool, wl, "noop", ws, log, runlogs, wrap=["strace", "-f", "-qq", "-e", "trace=open,openat,openat2", "-o", str(trace)])
            opened = set()
            for line in trace.read_text(errors="replace").splitlines():
                for p in wl.external:
                    if p in line and "ENOENT" not in line:
                        opened.add(os.path.basename(p))
            self.extra["w3_noop_opened"] = sorted(opened)
            self.extra["w3_noop_strace_ok"] = r2.rc == 0
        else:
            self.extra["w3_noop_opened"] = None
        if not r.ok:
            self.notes.append(f"the extra W3 no-op run (input reads check) failed its own check: {r.note}")

    def progress(self, tool, wl, scenario, run):
        status = "ok" if run.ok else f"CHECK FAILED ({run.note})"
        self.say(f"  {tool.name:12} {wl.key} {scenario:5} {run.secs * 1000:10.1f} ms  {run.maxrss_kib / 1024:7.1f} MiB  ran {len(run.ran):3}  {status}")

    def b3sum_baseline(self):
        """The machine's own hashing speed on the W3 inputs (b3sum, all cores, warm page cache)."""
        b3 = shutil.which("b3sum")
        files = [p for w in self.workloads if w.key == "w3" for p in w.external]
        if not b3 or not files:
            return
        secs, _, rc, cpu = timed([b3, *files], self.tmp, dict(os.environ), self.tmp / "b3sum.out")
        if rc == 0:
            self.extra["b3sum"] = (self.w3_bytes / secs / 1e9, secs, cpu)

    def scale_extras(self):
        """W4's scale checks on orchestrator (issue #14): `plan` of the whole matrix on an empty
        cache; the same commands merely spawned, `xargs -P <cores>` (the floor for any tool's cold
        run); and the time and peak memory of validating a 10^6-cell matrix."""
        orch = next((t for t in self.tools if t.name == "orchestrator"), None)
        w4 = next((w for w in self.workloads if w.key == "w4"), None)
        if orch is None or w4 is None:
            return
        ws = self.tmp / "scale"
        shutil.rmtree(ws, ignore_errors=True)
        ws.mkdir(parents=True)
        env = dict(os.environ)
        yaml = ws / "pipeline.yaml"
        yaml.write_text(orch.yaml(w4, ws / "ran.log", 1))
        reps = 1 if self.a.quick else 3
        plans = []
        for k in range(reps):
            secs, _, rc, _ = timed([str(orch.bin), "plan", str(yaml), "--cache-dir", str(ws / f"empty{k}"), "-q"], ws, env, ws / "plan.out")
            if rc == 0:
                plans.append(secs)
        self.extra["w4_plan"] = (median(plans), w4.cells + 2)
        # The commands, rendered with plain files: root, then every cell on all cores, then the gather.
        spawns = []
        for k in range(reps):
            d = ws / f"spawn{k}"
            d.mkdir()
            sub = lambda s, i="": {"id": s.name + (f"_{i}" if i != "" else ""), "log": str(d / "ran.log"), "p": "1", "g": "1", "i": str(i),  # noqa: E731
                                   "in:seed": str(self.data / "seed.txt"), "in:x": str(d / "root.out"), "in:a": "", "out": str(d / f"{s.name}{i}.out")}
            root, cell, gather = w4.stages
            lines = [render(cell.cmd, sub(cell, i)) for i in range(w4.cells)]
            (d / "cells.txt").write_text("\n".join(lines) + "\n")
            script = (f"{render(root.cmd, sub(root))}\n"
                      f"tr '\\n' '\\0' < {shlex.quote(str(d / 'cells.txt'))} | xargs -0 -P {os.cpu_count() or 1} -n 1 sh -c\n"
                      f"{render(gather.cmd, sub(gather))}\n")
            secs, _, rc, _ = timed(["sh", "-c", script], d, env, d / "spawn.out")
            if rc == 0:
                spawns.append(secs)
        self.extra["w4_spawn"] = median(spawns)
        # 10^6 cells: 1000 x 1000, one stage per cell reading one shared root.
        big = ws / "big.yaml"
        vals = ", ".join(str(i) for i in range(1000))
        big.write_text(f"name: big\nmatrix: {{ a: [{vals}], b: [{vals}] }}\nstages:\n"
                       "  root:\n    run: \"echo 1 > ${outputs.out}\"\n    outputs: [out]\n"
                       "  cell:\n    run: \"cat ${inputs.x} ${matrix.a} ${matrix.b} > ${outputs.out}\"\n"
                       "    inputs: { x: root.out }\n    outputs: [out]\n")
        secs, rss, rc, _ = timed([str(orch.bin), "validate", str(big), "--max-instances", "2000000"], ws, env, ws / "big.out")
        if rc == 0:
            self.extra["validate_1e6"] = (secs, rss, 1_000_001)

    # -- cargo benches -------------------------------------------------------------------------

    def cargo_benches(self):
        declared = {}
        for pkg_dir in (REPO, REPO / "stages"):
            toml = pkg_dir / "Cargo.toml"
            try:
                data = tomllib.loads(toml.read_text())
            except (OSError, tomllib.TOMLDecodeError) as e:
                self.notes.append(f"cannot read {toml}: {e}")
                continue
            pkg = data.get("package", {}).get("name")
            for b in data.get("bench", []):
                declared[(pkg, b.get("name"))] = ",".join(b.get("required-features", []))
        listed = {(x, y) for x, y, _, _ in CARGO_BENCHES}
        todo = list(CARGO_BENCHES) + [(p, b, f, "") for (p, b), f in declared.items() if (p, b) not in listed]
        out = []
        for pkg, name, feats, extra in todo:
            if (pkg, name) not in declared:
                out.append((pkg, name, "", "not available", ""))
                self.say(f"cargo bench -p {pkg} --bench {name}: not available (no [[bench]] entry yet)")
                continue
            # The list's features (e.g. `torch` for a bench with torch-only sections) plus the
            # bench's own `required-features`.
            feats = ",".join(sorted({f for f in (declared[(pkg, name)] + "," + feats).split(",") if f}))
            cmd = f"cargo bench -p {pkg} --bench {name}" + (f" --features {feats}" if feats else "") + (f" -- {extra}" if extra else "")
            # deps.sh exports LIBTORCH (torch benches) and ORCHESTRATOR_PYTHON, the numpy /
            # scikit-learn reference the benches print side by side with their own figures.
            if (REPO / "scripts" / "deps.sh").exists():
                cmd = "source scripts/deps.sh && " + cmd
            self.say(f"running: {cmd}")
            t0 = time.perf_counter()
            try:
                r = subprocess.run(["bash", "-c", cmd], cwd=REPO, capture_output=True, text=True, timeout=self.a.cargo_timeout)
                status = "ok" if r.returncode == 0 else f"failed (exit {r.returncode})"
                text = r.stdout if r.returncode == 0 else (r.stdout + r.stderr)
            except subprocess.TimeoutExpired as e:
                status, text = f"timed out after {self.a.cargo_timeout} s", (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
            status += f", {time.perf_counter() - t0:.0f} s"
            lines = [ln for ln in text.strip().splitlines() if ln.strip()][-40:]
            out.append((pkg, name, cmd, status, "\n".join(lines)))
            self.say(f"  {status}\n" + "\n".join("    " + ln for ln in lines))
        self.cargo = out

    # -- report --------------------------------------------------------------------------------

    def table(self) -> str:
        tools = [t.name for t in self.tools]
        peers = [t for t in tools if t != "orchestrator"]
        head = ["workload", "scenario"]
        for t in tools:
            head += [f"{t} (s)", "ran"]
        for p in peers:
            if "orchestrator" in tools:
                head.append(f"{p} / orch")
        rows = []
        for wl in self.workloads:
            for s in SCENARIOS:
                row = [wl.key.upper(), s]
                vals = {}
                for t in tools:
                    c = self.results.get((t, wl.key, s))
                    if c is None or c.skipped or not c.runs:
                        row += [c.skipped if c and c.skipped else "-", ""]
                        continue
                    m = c.secs()
                    vals[t] = m
                    n_ok = len([r for r in c.runs if r.rc == 0])
                    flag = "" if not c.failed() else " !"
                    row += [("failed" if m is None else fmt_s(m)) + flag + (f" (n={n_ok})" if n_ok != self.a.reps else ""), str(len(c.runs[-1].ran))]
                for p in peers:
                    if "orchestrator" in tools:
                        o, v = vals.get("orchestrator"), vals.get(p)
                        row.append((f"{v / o:.0f}x" if v / o >= 10 else f"{v / o:.1f}x") if o and v else "-")
                rows.append(row)
        return md_table(head, rows)

    def spread_table(self) -> str:
        tools = [t.name for t in self.tools]
        rows = []
        for wl in self.workloads:
            for s in SCENARIOS:
                row = [wl.key.upper(), s]
                for t in tools:
                    c = self.results.get((t, wl.key, s))
                    xs = [r.secs for r in c.runs if r.rc == 0] if c else []
                    row.append(f"{fmt_s(min(xs))} - {fmt_s(max(xs))}" if xs else "-")
                rows.append(row)
        return md_table(["workload", "scenario"] + [f"{t} min - max (s)" for t in tools], rows)

    def memory_table(self) -> str:
        tools = [t.name for t in self.tools]
        head = ["workload", "scenario"] + [f"{t} {what}" for t in tools for what in ("RSS MiB", "CPU s")]
        rows = []
        for wl in self.workloads:
            for s in SCENARIOS:
                row = [wl.key.upper(), s]
                for t in tools:
                    c = self.results.get((t, wl.key, s))
                    m = c.rss_mib() if c else None
                    cpu = c.cpu() if c else None
                    row += [f"{m:.0f}" if m is not None else "-", f"{cpu:.2f}" if cpu is not None else "-"]
                rows.append(row)
        return md_table(head, rows)

    def targets(self) -> list:
        """(target, measured, verdict) for each of the issue's targets on orchestrator."""
        R = lambda t, w, s: (self.results.get((t, w, s)).secs() if self.results.get((t, w, s)) else None)  # noqa: E731
        out = []
        o = lambda w, s: R("orchestrator", w, s)  # noqa: E731
        if not any(t.name == "orchestrator" for t in self.tools):
            return [("all targets", "orchestrator not measured", "n/a")]

        def ratio_row(label, w, s, peer, need):
            a, b = o(w, s), R(peer, w, s)
            if a is None or b is None:
                out.append((label, "not measured", "n/a"))
            else:
                out.append((label, f"{b / a:.1f}x", "met" if b / a >= need else "MISSED"))

        if any(w.key == "w2" for w in self.workloads):
            ratio_row("W2 cold >= 10x faster than Snakemake", "w2", "cold", "snakemake", 10)
            ratio_row("W2 cold >= 200x faster than DVC", "w2", "cold", "dvc", 200)
        if any(w.key == "w4" for w in self.workloads) and any(w.key == "w2" for w in self.workloads):
            # 25x the cells: cold should cost at most 25x (linear); a no-op at most 10x (issue #14).
            for s, most in (("noop", 10), ("cold", 25)):
                a, b = o("w2", s), o("w4", s)
                label = f"W4 {s} <= {most}x W2 {s} (25x the cells)"
                if a is None or b is None:
                    out.append((label, "not measured", "n/a"))
                else:
                    out.append((label, f"{b / a:.1f}x", "met" if b / a <= most else "MISSED"))
        if self.extra.get("w4_spawn") and o("w4", "cold"):
            r = o("w4", "cold") / self.extra["w4_spawn"]
            out.append((f"W4 cold <= 1.3x merely spawning its commands (xargs -P {os.cpu_count() or 1}: {self.extra['w4_spawn']:.2f} s)", f"{r:.2f}x", "met" if r <= 1.3 else "MISSED"))
        if self.extra.get("w4_plan") and self.extra["w4_plan"][0] is not None:
            secs, n = self.extra["w4_plan"]
            out.append((f"W4 `plan` of {n:,} instances (empty cache) < 100 ms", f"{secs * 1000:.0f} ms", "met" if secs < 0.1 else "MISSED"))
        if self.extra.get("validate_1e6"):
            secs, rss, n = self.extra["validate_1e6"]
            per = f", {rss * 1024 / n:,.0f} bytes per instance" if rss else ""
            out.append((f"10^6-cell matrix: `validate` ({n:,} instances)", f"{secs:.1f} s, peak {rss / 1024 / 1024:.2f} GiB{per}" if rss else f"{secs:.1f} s", "n/a"))
        if o("w2", "cold") and o("w2x", "cold"):
            out.append(("W2 matrix form vs explicit form (W2x), cold / no-op", f"{o('w2', 'cold'):.2f} / {o('w2x', 'cold'):.2f} s; {o('w2', 'noop') * 1000:.1f} / {o('w2x', 'noop') * 1000:.1f} ms", "n/a"))
        for wl in self.workloads:
            if wl.key in ("w4", "w5"):
                continue  # their no-op target is the ratio to W2 / W1 above
            v = o(wl.key, "noop")
            out.append((f"{wl.key.upper()} no-op <= 50 ms", "not measured" if v is None else f"{v * 1000:.1f} ms", "n/a" if v is None else ("met" if v <= 0.05 else "MISSED")))
        for wl in self.workloads:
            for peer in ("snakemake", "dvc"):
                ratio_row(f"{wl.key.upper()} one param >= 10x faster than {peer}", wl.key, "param", peer, 10)
        if any(w.key == "w3" for w in self.workloads):
            v = o("w3", "cold")
            if v is None:
                out.append(("W3 hashing >= 3 GB/s cold", "not measured", "n/a"))
            else:
                gbps = self.w3_bytes / v / 1e9
                out.append(("W3 hashing >= 3 GB/s cold (input bytes / whole cold run)", f"{gbps:.2f} GB/s", "met" if gbps >= 3 else "MISSED"))
            c = self.results.get(("orchestrator", "w3", "touch"))
            if c and c.runs:
                n = max(len(r.ran) for r in c.runs)
                out.append(("W3 touched-but-identical input reruns nothing", f"{n} stages ran", "met" if n == 0 and all(r.rc == 0 for r in c.runs) else "MISSED"))
            opened = self.extra.get("w3_noop_opened")
            rchar = self.extra.get("w3_noop_rchar")
            if opened is not None or rchar is not None:
                meas = []
                if opened is not None:
                    meas.append("opens " + (", ".join(opened) if opened else "no input"))
                if rchar is not None:
                    meas.append(f"read(2) {rchar / 1e6:.1f} MB in all")
                out.append(("W3 no-op does not re-read inputs", "; ".join(meas), "met" if opened == [] and (rchar is None or rchar < 64 << 20) else "MISSED"))
        return out

    def write_doc(self, elapsed):
        m = machine()
        rev = git_rev()
        orch = next((t for t in self.tools if t.name == "orchestrator"), None) or Orchestrator(self)
        known = getattr(orch, "version_line", None) or (orch.version() if orch.available() is None else "not built")
        versions = [f"- orchestrator: {known}"]
        for t in (Dvc(self), Snakemake(self)):
            versions.append(f"- {t.name}: {t.version() if t.available() is None else 'not installed'}")
        versions.append(f"- python {platform.python_version()}, git {subprocess.run(['git', '--version'], capture_output=True, text=True).stdout.split()[-1]}")
        lines = [
            "# Benchmarks",
            "",
            "Generated by `bench/run.sh` (`make bench`); do not edit by hand, rerun it. "
            f"Run {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, {elapsed / 60:.1f} min in all.",
            "",
            "## Machine",
            "",
            f"- {m['cpu']}, {m['nproc']} cores, {m['ram_gib']:.1f} GiB RAM, {m['kernel']}",
            f"- CPU vector extensions: {m['simd']} (blake3 and the hashing figures depend on them)",
            f"- orchestrator binary from commit {rev}" + (" (`+dirty`: the working tree had uncommitted changes in the files named)" if "+dirty" in rev else " (a clean working tree)"),
            f"- temp dir filesystem: {m.get('fs', '?')}",
            f"- load average (1/5/15 min) at the start: {self.load[0]}, at the end: {self.load[-1]} (the machine is shared: other work running at the same time slows every tool alike, and widens the spread)",
            "",
            "## Tools",
            "",
            *versions,
            "",
            "## How",
            "",
            "The same three workloads, with identical shell commands, are generated for each tool: a "
            "`pipeline.yaml` for orchestrator, a `dvc.yaml` (`foreach` for the matrix) in a fresh git "
            "repository after `dvc init` for DVC, a `Snakefile` (`expand()` for the gather) for Snakemake.",
            "",
            "- W1: a chain of 50 trivial stages; the first reads a small external `seed.txt`.",
            f"- W2: 1 root (reads `seed.txt`) + {self.a.cells} matrix stages (`cksum` of the root's output) + 1 gather that concatenates every cell's output.",
            f"- W3: 4 independent stages, each with its own {self.a.w3_gib:g} GiB external input of random bytes; the stage only `stat`s it, so the run time is the tool's own (hashing, bookkeeping).",
            "",
            "Scenarios: **cold** = fresh workspace and empty cache for every repetition; **noop** = nothing changed; "
            "**param** = param `g`, read by exactly one stage (W1's last stage, W2's gather, W3's 4th stage), changes: that stage alone must rerun; "
            "**touch** = the external inputs (`seed.txt`, the W3 files) get a new mtime, same bytes. Orchestrator and DVC hash content, so they must run nothing; "
            "Snakemake decides on mtimes but checksums inputs under 1 MB (`--max-checksum-file-size`), so it runs nothing in W1 and W2 and, by design, reruns all four W3 stages (its expected count).",
            "",
            f"Each cell is the median wall time of {self.a.reps} runs"
            + (f" ({self.a.dvc_w2_cold_reps} for DVC's W2 cold, which takes minutes)" if self.a.dvc_w2_cold_reps != self.a.reps else "")
            + ", timed around the tool's process (start-up included). `ran` is how many stages the last run of the cell ran, read from a log every stage command appends its id to: "
            "after every run the harness checks that exactly the expected stages ran (`!` marks a cell where a run failed that check or exited non-zero). "
            f"Parallelism: each tool's default on {m['nproc']} cores (Snakemake `--cores {os.cpu_count()}`; `dvc repro` runs stages one at a time). "
            "Inputs are in the page cache (written just before), so W3 measures hashing, not the disk.",
            "",
            "## Results (seconds, median)",
            "",
            self.table(),
            "",
        ]
        if self.skipped_tools:
            lines += ["Not measured: " + "; ".join(f"{k}: {v}" for k, v in self.skipped_tools.items()), ""]
        failures = [(k, r) for k, c in self.results.items() for r in c.failed()]
        if failures:
            lines += ["Failed checks:", ""]
            seen = set()
            for (t, w, s), r in failures:
                if (t, w, s, r.note) in seen:
                    continue
                seen.add((t, w, s, r.note))
                lines.append(f"- {t} {w.upper()} {s}: {r.note}")
            lines.append("")
        lines += ["Spread over the repetitions (the machine is shared, so single runs can be slow; the medians above are what counts):", "", self.spread_table(), ""]
        lines += ["## Orchestrator targets (from the issue)", "", md_table(["target", "measured", "verdict"], self.targets()), ""]
        if "b3sum" in self.extra:
            gbps, secs, cpu = self.extra["b3sum"]
            lines += [f"For scale: `b3sum` over the same four files (all cores, warm page cache), once, at the end: {secs:.2f} s wall, {cpu:.2f} s CPU, {gbps:.2f} GB/s.", ""]
        how = "GNU `/usr/bin/time -f %M`" if os.access(GNU_TIME, os.X_OK) else "`ru_maxrss` from `wait4` (GNU time missing: `apt-get install time`; this figure is at least the Python driver's own RSS)"
        lines += ["## Peak memory and CPU time", "", f"RSS: the largest resident set of any single process of the tool's process tree ({how}), the highest over the cell's runs. "
                  "CPU: user + system seconds of the whole process tree (stage commands included), median. CPU time depends much less than wall time on what else the machine runs. "
                  "Orchestrator hashes large files through a memory map, so its W3 cold/touch RSS counts the mapped page-cache pages of the inputs (shared with the page cache, not allocated).", "", self.memory_table(), ""]
        if self.notes:
            lines += ["## Notes", "", *[f"- {n}" for n in self.notes], ""]
        if self.extra.get("profile"):
            lines += ["## Where orchestrator's cold time goes (`--profile`)", ""]
            for key, text in self.extra["profile"].items():
                lines += [f"### {key.upper()}", "", "```", text, "```", ""]
        if self.extra.get("profile_noop"):
            lines += ["## Where orchestrator's no-op time goes (`--profile`)", ""]
            for key, text in self.extra["profile_noop"].items():
                lines += [f"### {key.upper()}", "", "```", text, "```", ""]
        if getattr(self, "cargo", None) is not None:
            lines += [CARGO_HEADING, "", "Run by the same harness (`CARGO_BENCHES` in `bench/bench.py`, plus every `[[bench]]` of both Cargo.toml files).", ""]
            for pkg, name, cmd, status, text in self.cargo:
                lines.append(f"### `{cmd}`: {status}" if cmd else f"### `cargo bench -p {pkg} --bench {name}`: {status}")
                lines.append("")
                if text:
                    lines += ["```", text, "```", ""]
        elif DOC.exists():
            # A run without the cargo benches keeps the figures of the last run that had them.
            old = DOC.read_text()
            at = old.find(CARGO_HEADING)
            if at >= 0:
                carried = old[at:].split("\n", 1)[1] if "\n" in old[at:] else ""
                heading = old[at:].split("\n", 1)[0]
                stamp = re.search(r"the run of (\d{4}-\d\d-\d\d \d\d:\d\d UTC)", heading) or re.search(r"Run (\d{4}-\d\d-\d\d \d\d:\d\d UTC)", old)
                since = f" (carried over from the run of {stamp.group(1)}: this run had `--no-cargo`)" if stamp else " (carried over: this run had `--no-cargo`)"
                lines += [CARGO_HEADING + since, carried.lstrip("\n")]
        DOC.parent.mkdir(parents=True, exist_ok=True)
        DOC.write_text("\n".join(lines))
        self.say(f"wrote {DOC}")

    def main(self):
        t0 = time.perf_counter()
        self.load = [loadavg()]
        if "w2" in self.a.workloads:
            self.notes.append(
                "W2 for orchestrator uses `matrix:` and a gather input (`cell.out[*]`), as DVC uses `foreach` and Snakemake "
                "`expand()`; W2x is the same DAG written without the matrix (200 stages spelled out, the gather naming each "
                "output), run by orchestrator only.")
        try:
            if self.a.install_peers:
                self.install_peers()
            self.pick_tools()
            if not self.a.no_workloads:
                self.make_data()
                for wl in self.workloads:
                    for tool in self.tools:
                        if wl.key == "w2x" and tool.name != "orchestrator":
                            continue
                        if wl.key in ("w4", "w5") and tool.name != "orchestrator" and not self.a.peers_large:
                            note = f"{tool.name} not run on {wl.key.upper()} (its W1/W2 cost scaled up would take most of an hour; --peers-large runs it)"
                            if note not in self.notes:
                                self.notes.append(note)
                            continue
                        self.say(f"{tool.name}: {wl.title}")
                        self.bench(tool, wl)
                self.b3sum_baseline()
                self.scale_extras()
            if not self.a.no_cargo:
                self.cargo_benches()
        finally:
            if not self.a.keep:
                shutil.rmtree(self.tmp, ignore_errors=True)
            else:
                self.say(f"kept {self.tmp}")
        if not self.a.no_workloads:
            print()
            print(self.table())
            print()
            print(md_table(["target", "measured", "verdict"], self.targets()))
        self.load.append(loadavg())
        if not self.a.no_doc:
            self.write_doc(time.perf_counter() - t0)


def fmt_s(x: float) -> str:
    if x < 0.1:
        return f"{x * 1000:.1f} ms"
    return f"{x:.2f}"


def md_table(head, rows) -> str:
    rows = [[str(c) for c in r] for r in rows]
    w = [max(len(str(h)), *(len(r[i]) for r in rows)) if rows else len(str(h)) for i, h in enumerate(head)]
    fmt = lambda r: "| " + " | ".join(c.ljust(w[i]) for i, c in enumerate(r)) + " |"  # noqa: E731
    return "\n".join([fmt(head), "|" + "|".join("-" * (x + 2) for x in w) + "|", *(fmt(r) for r in rows)])


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def machine() -> dict:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram = 0.0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram = int(line.split()[1]) / (1 << 20)
    except OSError:
        pass
    flags = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    simd = ", ".join(f for f in ("sse4_2", "avx", "avx2", "avx512f", "avx512bw", "sha_ni") if f in flags) or "none of sse4_2/avx/avx2/avx512"
    fs = subprocess.run(["df", "-T", tempfile.gettempdir()], capture_output=True, text=True).stdout.splitlines()
    return {"cpu": cpu, "nproc": os.cpu_count(), "ram_gib": ram, "kernel": f"{platform.system()} {platform.release()}", "fs": fs[-1].split()[1] if len(fs) > 1 else "?", "simd": simd}


def parse_args(argv):
    ap = argparse.ArgumentParser(prog="bench/run.sh", description=__doc__.split("\n\n")[0])
    ap.add_argument("--all", action="store_true", help="everything: install the peers first when missing, every workload, --profile (when perf is there), every cargo bench")
    ap.add_argument("--install-peers", action="store_true", help=f"install {' '.join(PEER_PINS)} into bench/.venv from PyPI")
    ap.add_argument("--tools", default="orchestrator,dvc,snakemake", help="comma list (default: all three)")
    ap.add_argument("--workloads", default="w1,w2,w3,w4,w5", help="comma list (default: w1,w2,w3,w4,w5; W4 = W2 with 5,000 cells, W5 = W1 with 1,000 stages)")
    ap.add_argument("--peers-large", action="store_true", help="also run DVC and Snakemake on W4 and W5 (long)")
    ap.add_argument("--reps", type=int, default=5, help="repetitions per scenario (default 5)")
    ap.add_argument("--dvc-w2-cold-reps", type=int, default=1, help="repetitions of DVC's W2 cold run, which takes minutes (default 1)")
    ap.add_argument("--cells", type=int, default=200, help="W2 matrix size (default 200)")
    ap.add_argument("--w3-gib", type=float, default=1.0, help="size of each W3 input in GiB (default 1)")
    ap.add_argument("--quick", action="store_true", help="smoke test: 1 rep, 20 cells, 64 MiB W3 inputs, no cargo benches, docs/benchmarks.md untouched")
    ap.add_argument("--no-cargo", action="store_true", help="skip the cargo benches")
    ap.add_argument("--no-workloads", action="store_true", help="only the cargo benches (printed; docs/benchmarks.md is left as it is)")
    ap.add_argument("--cargo-timeout", type=int, default=3600, help="seconds allowed per cargo bench (default 3600)")
    ap.add_argument("--profile", action="store_true", help="extra runs of orchestrator under perf (one no-op, one cold per workload), summarised in the report")
    ap.add_argument("--no-doc", action="store_true", help="do not write docs/benchmarks.md")
    ap.add_argument("--tmp", help="work folder (default: a new one under $TMPDIR, deleted at the end)")
    ap.add_argument("--keep", action="store_true", help="keep the work folder (workspaces, logs, W3 inputs)")
    a = ap.parse_args(argv)
    if a.all:
        a.profile = a.profile or shutil.which("perf") is not None
        if not (VENV / "bin" / "dvc").exists() or not (VENV / "bin" / "snakemake").exists():
            a.install_peers = True
    if a.no_workloads:
        a.no_doc = True
    if a.quick:
        a.reps, a.dvc_w2_cold_reps, a.cells, a.w3_gib, a.no_cargo, a.no_doc = 1, 1, 20, 1 / 16, True, True
    if a.reps < 1 or a.dvc_w2_cold_reps < 1 or a.cells < 1 or a.w3_gib <= 0:
        ap.error("--reps, --dvc-w2-cold-reps, --cells and --w3-gib must be positive")
    return a


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        Harness(args).main()
    except BenchError as e:
        print(f"bench: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
