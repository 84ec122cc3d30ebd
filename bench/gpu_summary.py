"""Helpers of bench/gpu.sh (numpy only, plus the project's binaries).

  gpu_summary.py cpu-eval --root R --bin B --cache C --out O
      Runs the eval-trainset stage of R/pipelines/diffprob_50.yaml again on the CPU, with the
      worker B/orchestrator-stage, on the model and data cached in C, and prints one JSON line:
      max |p_cuda - p_cpu|, predicted labels that differ, samples.
  gpu_summary.py summary --out O
      Markdown summary of a gpu.sh run folder: per-stage time, device and GPU memory of the main
      job; the throughput table (tch vs PyTorch); the CUDA-vs-CPU p(x) difference; the AMP losses.
"""
import argparse
import csv
import datetime
import json
import os
import subprocess
import sys

import numpy as np


def show(root, binary, cache, stage, output):
    out = subprocess.run(
        [os.path.join(binary, "orchestrator"), "show", "pipelines/diffprob_50.yaml", stage, output, "--cache-dir", cache],
        cwd=root, capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[-1].split()[-1]


def cpu_eval(a):
    model = show(a.root, a.bin, a.cache, "train_original", "model")
    train = show(a.root, a.bin, a.cache, "data", "train")
    probs = show(a.root, a.bin, a.cache, "eval_trainset", "probs")
    preds = show(a.root, a.bin, a.cache, "eval_trainset", "predictions")
    os.makedirs(a.out, exist_ok=True)
    inv = {
        "version": 1, "kind": "eval-trainset", "stage_id": "eval_trainset_cpu", "params": {},
        "inputs": {"model": model, "train": train},
        "outputs": {"probs": os.path.join(a.out, "probs"), "predictions": os.path.join(a.out, "pred_label.npy")},
        "out_dir": a.out, "work_dir": os.path.join(a.out, "work"), "device": "cpu",
        "progress": os.path.join(a.out, "progress.jsonl"),
    }
    path = os.path.join(a.out, "invocation.json")
    with open(path, "w") as f:
        json.dump(inv, f)
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    subprocess.run([os.path.join(a.bin, "orchestrator-stage"), "run", path], env=env, check=True)
    p_gpu = np.load(os.path.join(probs, "prob.npy"))
    p_cpu = np.load(os.path.join(a.out, "probs", "prob.npy"))
    l_gpu = np.load(preds)
    l_cpu = np.load(os.path.join(a.out, "pred_label.npy"))
    print(json.dumps({
        "samples": int(len(p_cpu)),
        "max_abs_diff": float(np.max(np.abs(p_gpu - p_cpu))),
        "mean_abs_diff": float(np.mean(np.abs(p_gpu - p_cpu))),
        "pred_labels_differing": int(np.sum(l_gpu != l_cpu)),
    }))


def read_jsonl(path):
    if not os.path.exists(path):
        return []
    out = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    pass
    return out


def memory_samples(path):
    """(unix seconds, MiB) from nvidia-smi's `timestamp, memory.used` CSV."""
    out = []
    if not os.path.exists(path):
        return out
    with open(path) as f:
        for row in csv.reader(f):
            if len(row) < 2:
                continue
            try:
                t = datetime.datetime.strptime(row[0].strip(), "%Y/%m/%d %H:%M:%S.%f").timestamp()
                out.append((t, float(row[1])))
            except ValueError:
                pass
    return out


def summary(a):
    o = a.out
    lines = ["# bench/gpu.sh results", ""]
    if os.path.exists(os.path.join(o, "machine.txt")):
        lines += ["```", open(os.path.join(o, "machine.txt")).read().strip(), "```", ""]
    ev = read_jsonl(os.path.join(o, "main_job_events.jsonl"))
    starts = {e["instance"]: e for e in ev if e.get("event") == "started"}
    mem = memory_samples(os.path.join(o, "gpu_memory.csv"))
    lines += ["## Main job (larger scale)", "", "| stage | device | seconds | GPU memory peak (MiB, whole GPU) |", "|---|---|---|---|"]
    for e in ev:
        if e.get("event") != "finished":
            continue
        s = starts.get(e["instance"], {})
        t0, t1 = s.get("time", e["time"]) - 1, e["time"] + 1
        peak = max((m for t, m in mem if t0 <= t <= t1), default=None)
        lines.append(f"| {e['instance']} | {e.get('device')} | {e.get('duration_s', 0):.1f} | {'' if peak is None else f'{peak:.0f}'} |")
    failed = [e for e in ev if e.get("event") == "failed"]
    if failed:
        lines += ["", "Failed: " + ", ".join(e["instance"] for e in failed)]
    lines += ["", "## Training throughput, images/s (iResNet + CosFace, 112x112)", "",
              "| batch | precision | tch | PyTorch eager | tch / PyTorch |", "|---|---|---|---|---|"]
    tp = read_jsonl(os.path.join(o, "throughput.jsonl"))
    keys = sorted({(r.get("batch"), str(r.get("precision")).lower()) for r in tp if "images_per_s" in r})
    for b, prec in keys:
        def get(side):
            for r in tp:
                if r.get("side") == side and r.get("batch") == b and str(r.get("precision")).lower() == prec:
                    return r.get("images_per_s")
            return None
        t, p = get("tch"), get("pytorch")
        ratio = f"{t / p:.2f}" if t and p else ""
        lines.append(f"| {b} | {prec} | {t or 0:.1f} | {p or 0:.1f} | {ratio} |")
    pofx = read_jsonl(os.path.join(o, "pofx.json"))
    lines += ["", "## eval-trainset p(x): CUDA vs CPU", "", "```", json.dumps(pofx[0] if pofx else {}), "```"]
    lt = read_jsonl(os.path.join(o, "losses_tch.json"))
    lp = read_jsonl(os.path.join(o, "losses_pytorch.json"))
    lines += ["", "## AMP: losses of the first steps, tch vs PyTorch", ""]
    if lt and lp:
        a_, b_ = np.array(lt[0]["losses"]), np.array(lp[0]["losses"])
        n = min(len(a_), len(b_))
        rel = np.abs(a_[:n] - b_[:n]) / np.maximum(np.abs(b_[:n]), 1e-12)
        lines += [f"steps {n}; max relative difference {rel.max():.3e}; final loss tch {a_[n - 1]:.4f}, PyTorch {b_[n - 1]:.4f}; "
                  f"loss scale tch {lt[0].get('loss_scale')}, PyTorch {lp[0].get('loss_scale')}", "",
                  "| step | tch | PyTorch |", "|---|---|---|"]
        lines += [f"| {k} | {a_[k]:.5f} | {b_[k]:.5f} |" for k in range(n)]
    print("\n".join(lines))


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("cpu-eval")
    for k in ["--root", "--bin", "--cache", "--out"]:
        c.add_argument(k, required=True)
    s = sub.add_parser("summary")
    s.add_argument("--out", required=True)
    a = ap.parse_args()
    {"cpu-eval": cpu_eval, "summary": summary}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
