"""The DiffProb reference's pruning scripts, written plainly in numpy, for parity tests and benchmarks.

Semantics follow github.com/EduardaCaldeira/DiffProb (ac4a717): eval_simprobs.py and
eval_simprobs_clean.py (DiffProb walk with the 1 %-of-t retry), coreset_dynunc.py (windowed
std of the per-epoch probability history, the window ending at the final epoch dropped),
coreset_rand.py (the last k positions of each identity), clean_trainset.py (flag = argmax != label,
prob_clean = -1 where flagged) and label_mapping.py. Deviations, all decided in diffprob.md:
- the DiffProb retry loop is the reference's `final = [top]; while len(final) < min` (so
  min_per_id <= 1 keeps only each identity's top sample), with R9: tau <= 0 and still too few ->
  keep all (the reference loops forever there);
- R4 target-ratio bisection, which the reference does not have, written plainly;
- kept lists are written from Python ints (numpy 2 would print `np.int64(5)`).

The per-identity ordered list is the reference's `[x for x in rank if x in samples]`; with
`"faithful": true` it is computed exactly so (O(N*C)), otherwise by an equivalent stable grouping
of the same global argsort.

Usage: python prune_reference.py JOBS.json  (see `run_jobs`); prints {job: seconds} as JSON.
"""

import json
import os
import re
import sys
import time

import numpy as np


def label_dict_of(labels, flags=None):
    """identity -> ascending positions (generate_label_dict.py), flagged samples removed."""
    c = int(labels.max()) + 1 if len(labels) else 0
    order = np.argsort(labels, kind="stable")
    bounds = np.searchsorted(labels[order], np.arange(c + 1))
    out = {}
    for i in range(c):
        pos = order[bounds[i]:bounds[i + 1]]
        if flags is not None:
            pos = pos[flags[pos] == 0]
        out[i] = [int(p) for p in pos]
    return out


def ordered_lists(values, labels, label_dict, faithful, clean_values=None):
    """Per identity, its samples in the order of the global argsort of `values`."""
    rank = np.argsort(values)
    if faithful:
        out = {}
        for i, samples in label_dict.items():
            s = set(samples)
            if clean_values is None:
                out[i] = [int(x) for x in rank if x in s]
            else:
                out[i] = [int(x) for x in rank if x in s and clean_values[x] >= 0]
        return out
    keep = np.ones(len(values), dtype=bool)
    members = np.zeros(len(values), dtype=bool)
    for samples in label_dict.values():
        members[samples] = True
    keep &= members
    if clean_values is not None:
        keep &= clean_values >= 0
    r = rank[keep[rank]]
    grouped = r[np.argsort(labels[r], kind="stable")]
    c = len(label_dict)
    bounds = np.searchsorted(labels[grouped], np.arange(c + 1))
    return {i: grouped[bounds[i]:bounds[i + 1]].tolist() for i in range(c)}


def diffprob_walk(ordered, v, t, min_per_id):
    """eval_simprobs.py's loop for one identity (v: python floats, f64)."""
    if len(ordered) <= min_per_id:
        return list(ordered)
    threshold_decrease = 0
    final = [ordered[-1]]
    while len(final) < min_per_id:
        min_kept = v[ordered[-1]]
        final = [ordered[-1]]
        for sample in range(len(ordered) - 2, -1, -1):
            if (min_kept - v[ordered[sample]]) > (1 + threshold_decrease) * t:
                final.append(ordered[sample])
                min_kept = v[ordered[sample]]
        if len(final) < min_per_id and (1 + threshold_decrease) * t <= 0:
            return list(ordered)
        threshold_decrease -= 0.01
    return final


def diffprob(lists, v, t, min_per_id):
    keep = []
    for i in range(len(lists)):
        keep += list(set(diffprob_walk(lists[i], v, t, min_per_id)))
    return sorted(keep)


def diffprob_target(lists, v, ratio, min_per_id, n):
    """R4: bisection on [0, 1] for K(t) = target, t non-increasing in K."""
    target = int(np.ceil(ratio * n))
    count = lambda t: sum(len(diffprob_walk(lists[i], v, t, min_per_id)) for i in range(len(lists)))
    k0 = count(0.0)
    if k0 < target:
        raise SystemExit(f"target unreachable: max {k0}")
    if count(1.0) >= target:
        return 1.0
    lo, hi = 0.0, 1.0
    for _ in range(64):
        mid = (lo + hi) / 2
        k = count(mid)
        if k == target:
            return mid
        if k > target:
            lo = mid
        else:
            hi = mid
    return lo


def k_rule(n, fraction, min_per_id):
    kept_amount = int(n * fraction)
    if kept_amount < min_per_id:
        kept_amount = min_per_id if n > min_per_id else n
    return kept_amount


def dynunc_scores(history_dir, window, include_final, history_npy=None):
    """coreset_dynunc.py; `history_npy` (an [E, N] array) replaces the per-epoch text files."""
    if history_npy is not None:
        rows = history_npy
    else:
        files = [f for f in os.listdir(history_dir) if re.match(r"prob_\d+\.txt$", f)]
        files.sort(key=lambda x: int(re.findall(r"\d+", x)[0]))
        rows = (np.loadtxt(os.path.join(history_dir, f)) for f in files)
        rows = list(rows)
    his = None
    uncertainty_his = []
    last = len(rows) if include_final else len(rows) - 1
    for idx, p in enumerate(rows):
        if his is None:
            his = np.zeros((len(p), window))
        indices = np.nonzero(p)[0]
        his[indices] = np.concatenate((his[indices, 1:], p[indices, None]), axis=1)
        if idx >= window - 1 and idx < last:
            uncertainty_his.append(np.std(his, axis=1, ddof=1) * 10)
    return np.mean(np.array(uncertainty_his), axis=0)


def top_k(lists, fraction, min_per_id):
    keep = []
    for i in range(len(lists)):
        ordered = lists[i]
        k = k_rule(len(ordered), fraction, min_per_id)
        keep += list(set(ordered[-k:])) if k > 0 else []
    return sorted(keep)


def rand_reference(label_dict, fraction, min_per_id):
    keep = []
    for i in range(len(label_dict)):
        samples = label_dict[i]
        k = k_rule(len(samples), fraction, min_per_id)
        keep += list(set(samples[-k:])) if k > 0 else []
    return sorted(keep)


def write_kept(path, keep):
    with open(path, "w") as f:
        f.write(f"kept_index = {[int(x) for x in keep]}")


def relabel(label_dict, kept):
    kept = set(kept)
    label_map = {}
    total = 0
    for i in range(len(label_dict)):
        for s in label_dict[i]:
            if s in kept:
                label_map[i] = total
                total += 1
                break
    return label_map


def run_jobs(spec):
    out = spec["out"]
    os.makedirs(out, exist_ok=True)
    timings = {}
    labels = np.load(spec["labels"]).astype(np.int64)
    n = len(labels)
    faithful = spec.get("faithful", False)
    state = {}
    # Inputs are read before the clock starts: the timings are of the algorithms.
    if spec.get("probs_txt"):
        state["probs"] = np.loadtxt(spec["probs_txt"])
    if spec.get("history_npy"):
        state["history"] = np.load(spec["history_npy"]).astype(np.float64)

    def probs():
        return state["probs"]

    for job in spec["jobs"]:
        name, kind = job["name"], job["kind"]
        t0 = time.perf_counter()
        if kind == "savetxt":
            np.savetxt(os.path.join(out, name + ".txt"), probs())
        elif kind == "clean":
            pred = np.load(spec["pred"])
            flags = (pred != labels).astype(np.uint8)
            state["flags"] = flags
            state["prob_clean"] = np.where(flags == 1, -1.0, probs())
            np.save(os.path.join(out, name + "_flags.npy"), flags)
            np.savetxt(os.path.join(out, name + "_prob_clean.txt"), state["prob_clean"])
            write_kept(os.path.join(out, name + ".txt"), np.nonzero(flags == 0)[0])
        elif kind == "diffprob":
            clean = job.get("clean", False)
            v = state["prob_clean"] if clean else probs()
            ld = label_dict_of(labels)
            lists = ordered_lists(v, labels, ld, faithful, v if clean else None)
            vl = v.tolist()
            if "target_ratio" in job:
                t = diffprob_target(lists, vl, job["target_ratio"], job["min"], n)
                with open(os.path.join(out, name + "_t.json"), "w") as f:
                    json.dump({"t": t}, f)
            else:
                t = job["threshold"]
            write_kept(os.path.join(out, name + ".txt"), diffprob(lists, vl, t, job["min"]))
        elif kind == "dynunc":
            key = (job["window"], job["include_final"])
            if key not in state:
                state[key] = dynunc_scores(spec.get("history_dir"), job["window"], job["include_final"], state.get("history"))
                np.savetxt(os.path.join(out, f"dynunc_w{key[0]}_f{int(key[1])}.txt"), state[key])
            u = state[key]
            lists = ordered_lists(u, labels, label_dict_of(labels), faithful)
            write_kept(os.path.join(out, name + ".txt"), top_k(lists, job["fraction"], job["min"]))
        elif kind == "rand":
            flags = state["flags"] if job.get("clean", False) else None
            write_kept(os.path.join(out, name + ".txt"), rand_reference(label_dict_of(labels, flags), job["fraction"], job["min"]))
        elif kind == "relabel":
            with open(job["kept"]) as f:
                kept = [int(x) for x in f.read().split("=", 1)[1].strip().strip("[]").split(",") if x.strip()]
            with open(os.path.join(out, name + ".json"), "w") as f:
                f.write(json.dumps({str(k): v for k, v in relabel(label_dict_of(labels), kept).items()}, indent=2) + "\n")
        else:
            raise SystemExit(f"unknown job kind {kind}")
        timings[name] = time.perf_counter() - t0
    print(json.dumps(timings))


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        run_jobs(json.load(f))
