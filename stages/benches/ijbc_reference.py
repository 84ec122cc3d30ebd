"""The IJB-C 1:1 procedure in NumPy / scikit-learn (insightface eval_ijbc.py style), timed on the
inputs that stages/benches/ijbc.rs generated. Re-implemented from the procedure's description
(formats.md §3.3-3.4), not copied.

usage: ijbc_reference.py DIR   (reads feats/tids/mids/p1/p2/labels .npy; writes ref_score.npy,
ref_tar.npy, ref_auc.npy and prints one JSON line of timings)
"""
import json
import os
import sys
import time

import numpy as np
from sklearn.metrics import auc, roc_curve
from sklearn.preprocessing import normalize

FAR_TARGETS = [10 ** -6, 10 ** -5, 10 ** -4, 10 ** -3, 10 ** -2, 10 ** -1]


def image2template_feature(img_feats, templates, medias):
    unique_templates = np.unique(templates)
    template_feats = np.zeros((len(unique_templates), img_feats.shape[1]))
    for count, uqt in enumerate(unique_templates):
        (ind_t,) = np.where(templates == uqt)
        face_feats = img_feats[ind_t]
        face_medias = medias[ind_t]
        unique_medias, counts = np.unique(face_medias, return_counts=True)
        media_feats = []
        for u, ct in zip(unique_medias, counts):
            (ind_m,) = np.where(face_medias == u)
            if ct == 1:
                media_feats.append(face_feats[ind_m])
            else:
                media_feats.append(np.mean(face_feats[ind_m], axis=0, keepdims=True))
        template_feats[count] = np.sum(np.array(media_feats), axis=0)
    return normalize(template_feats), unique_templates


def verification(template_norm_feats, unique_templates, p1, p2):
    template2id = np.zeros((max(unique_templates) + 1, 1), dtype=int)
    for count, uqt in enumerate(unique_templates):
        template2id[uqt] = count
    score = np.zeros((len(p1),))
    total_pairs = np.arange(len(p1))
    batchsize = 100000
    for start in range(0, len(p1), batchsize):
        s = total_pairs[start:start + batchsize]
        feat1 = template_norm_feats[template2id[p1[s]]]
        feat2 = template_norm_feats[template2id[p2[s]]]
        score[s] = np.sum(feat1 * feat2, -1).flatten()
    return score


def tar_at_far(fpr, tpr):
    fpr = np.flipud(fpr)
    tpr = np.flipud(tpr)
    row = []
    for x in FAR_TARGETS:
        _, min_index = min(list(zip(abs(fpr - x), range(len(fpr)))))
        row.append(tpr[min_index])
    return np.array(row)


def main():
    d = sys.argv[1]
    load = lambda n: np.load(os.path.join(d, n + ".npy"))
    feats, tids, mids = load("feats"), load("tids"), load("mids")
    p1, p2, labels = load("p1"), load("p2"), load("labels")
    t = {}
    t0 = time.perf_counter()
    tf, ut = image2template_feature(feats, tids, mids)
    t["pool_s"] = time.perf_counter() - t0
    del feats
    t0 = time.perf_counter()
    score = verification(tf, ut, p1, p2)
    t["score_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    fpr, tpr, _ = roc_curve(labels, score)
    tar = tar_at_far(fpr, tpr)
    a = auc(fpr, tpr)
    t["metrics_s"] = time.perf_counter() - t0
    # scikit-learn on our scores too: the metric code alone, on identical inputs.
    ours = os.path.join(d, "our_score.npy")
    if os.path.exists(ours):
        s32 = np.load(ours)  # f64 since the f64 scoring
        t0 = time.perf_counter()
        fpr32, tpr32, _ = roc_curve(labels, s32)
        tar32 = tar_at_far(fpr32, tpr32)
        a32 = auc(fpr32, tpr32)
        t["metrics_on_ours_s"] = time.perf_counter() - t0
        np.save(os.path.join(d, "ref_tar_on_ours.npy"), tar32)
        np.save(os.path.join(d, "ref_auc_on_ours.npy"), np.array([a32]))
        np.save(os.path.join(d, "ref_fpr_on_ours.npy"), fpr32)
    np.save(os.path.join(d, "ref_score.npy"), score)
    np.save(os.path.join(d, "ref_tar.npy"), tar)
    np.save(os.path.join(d, "ref_auc.npy"), np.array([a]))
    t["total_s"] = t["pool_s"] + t["score_s"] + t["metrics_s"]
    print(json.dumps(t))


if __name__ == "__main__":
    main()
