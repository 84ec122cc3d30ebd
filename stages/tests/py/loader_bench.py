"""Python side of the loader benchmark (stages/benches/loader.rs).

Reads the same face-layout RecordIO `train/` folder the way the reference trainer does
(MXFaceDataset: `.idx` → offsets, IRHeader, JPEG decode to RGB, RandomHorizontalFlip(0.5),
x/255, (x-0.5)/0.5, CHW float32) with PIL, batched by torch's DataLoader, and prints
images/s as one JSON line: {"workers": W, "images": N, "seconds": S, "images_per_s": R}.

usage: loader_bench.py TRAIN_DIR [--workers W] [--batch B] [--epochs E]
"""
import argparse
import io
import json
import mmap
import struct
import time

import numpy as np
from PIL import Image

MAGIC = 0xCED7230A


class RecFaces:
    def __init__(self, train_dir):
        self.rec_path = f"{train_dir}/train.rec"
        offsets = {}
        with open(f"{train_dir}/train.idx") as f:
            for line in f:
                k, o = line.split("\t")
                offsets[int(k)] = int(o)
        self.offsets = offsets
        self.map = None
        head = self._record(0)
        flag = struct.unpack_from("<I", head, 0)[0]
        if flag > 0:
            n1 = int(struct.unpack_from("<f", head, 24)[0])
            self.keys = list(range(1, n1))
        else:
            self.keys = list(offsets)

    def _record(self, key):
        if self.map is None:  # opened lazily so that worker processes each map the file
            f = open(self.rec_path, "rb")
            self.map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        pos = self.offsets[key]
        out = b""
        while True:
            magic, lrec = struct.unpack_from("<II", self.map, pos)
            assert magic == MAGIC
            cflag, length = lrec >> 29, lrec & ((1 << 29) - 1)
            out += self.map[pos + 8 : pos + 8 + length]
            pos += 8 + length + (4 - length % 4) % 4
            if cflag in (0, 3):
                return out
            out += struct.pack("<I", MAGIC)

    def __len__(self):
        return len(self.keys)

    def __getitem__(self, i):
        rec = self._record(self.keys[i])
        flag, label = struct.unpack_from("<If", rec, 0)
        start = 24 + 4 * flag
        if flag > 0:
            label = struct.unpack_from("<f", rec, 24)[0]
        img = np.asarray(Image.open(io.BytesIO(rec[start:])).convert("RGB"))
        if np.random.rand() < 0.5:
            img = img[:, ::-1]
        x = img.transpose(2, 0, 1).astype(np.float32)
        x = (x / 255.0 - 0.5) / 0.5
        return x, int(label)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("train_dir")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=1)
    a = ap.parse_args()
    ds = RecFaces(a.train_dir)
    import torch
    from torch.utils.data import DataLoader

    torch.set_num_threads(1)
    dl = DataLoader(ds, batch_size=a.batch, shuffle=True, num_workers=a.workers, drop_last=False)
    n = 0
    t0 = time.perf_counter()
    for _ in range(a.epochs):
        for x, y in dl:
            n += x.shape[0]
    s = time.perf_counter() - t0
    print(json.dumps({"workers": a.workers, "images": n, "seconds": s, "images_per_s": n / s}))


if __name__ == "__main__":
    main()
