"""The reference's image decoding and p(x), for stages/tests/jpeg_reference.rs.

usage:
  jpeg_reference.py encode SRC_DIR OUT_DIR
      SRC_DIR holds img{k}.npy (HWC uint8 RGB, the synthetic faces decoded). Writes JPEGs made with
      PIL at several subsamplings and qualities (and grayscale, progressive, odd sizes) as
      OUT_DIR/{name}.jpg.
  jpeg_reference.py decode DIR
      For every DIR/*.jpg: DIR/{name}.pil.npy = PIL `Image.open(...).convert("RGB")` and
      DIR/{name}.cv2.npy = `cv2.imdecode(..., IMREAD_COLOR)` turned from BGR to RGB.
  jpeg_reference.py pofx MODEL_DIR TRAIN_DIR OUT.npy
      p(x) of every training image (diffprob.md section 2.3) with the reference's classes
      (golden.py's IResNet), the weights of MODEL_DIR and PIL-decoded pixels, in float32 as
      eval_trainset.py computes it; written as OUT.npy (float64 of the float32 values).
"""
import io
import json
import os
import struct
import sys

import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))


def encode(src, out):
    os.makedirs(out, exist_ok=True)
    files = sorted(f for f in os.listdir(src) if f.endswith(".npy"))
    for f in files:
        rgb = np.load(os.path.join(src, f))
        img = Image.fromarray(rgb, "RGB")
        stem = f[:-4]
        for sub, tag in [(0, "444"), (1, "422"), (2, "420")]:
            for q in [50, 75, 95, 100]:
                img.save(os.path.join(out, f"{stem}_{tag}_q{q}.jpg"), quality=q, subsampling=sub)
        img.save(os.path.join(out, f"{stem}_progressive.jpg"), quality=90, progressive=True)
        img.convert("L").save(os.path.join(out, f"{stem}_gray.jpg"), quality=90)
        # Odd sizes exercise the edges of the upsampling and the partial MCUs.
        img.resize((113, 97)).save(os.path.join(out, f"{stem}_odd_420.jpg"), quality=90, subsampling=2)
        img.resize((57, 111)).save(os.path.join(out, f"{stem}_odd_422.jpg"), quality=85, subsampling=1)


def decode(d):
    import cv2

    for f in sorted(os.listdir(d)):
        if not f.endswith(".jpg"):
            continue
        with open(os.path.join(d, f), "rb") as fh:
            data = fh.read()
        stem = f[:-4]
        pil = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        np.save(os.path.join(d, stem + ".pil.npy"), np.ascontiguousarray(pil))
        bgr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
        np.save(os.path.join(d, stem + ".cv2.npy"), np.ascontiguousarray(bgr[:, :, ::-1]))


def pofx(model_dir, train_dir, out):
    import torch
    import torch.nn.functional as F
    from safetensors.torch import load_file

    sys.path.insert(0, HERE)
    from golden import IResNet
    from loader_bench import RecFaces

    torch.set_num_threads(1)
    with open(os.path.join(model_dir, "model.json")) as f:
        info = json.load(f)
    assert info["network"] == "iresnet-tiny", info["network"]
    h, w = info["input_h"], info["input_w"]
    net = IResNet([1, 1, 1, 1], (16, 32, 64, 128), 16, (h, w), emb=info["embedding_size"])
    missing, unexpected = net.load_state_dict(load_file(os.path.join(model_dir, "backbone.safetensors")), strict=False)
    assert not unexpected and all(k.endswith("num_batches_tracked") for k in missing), (missing, unexpected)
    net.eval()
    kernel = load_file(os.path.join(model_dir, "header.safetensors"))["kernel"]
    ds = RecFaces(train_dir)
    probs = []
    with torch.no_grad():
        for i in range(len(ds)):
            rec = ds._record(ds.keys[i])
            flag, label = struct.unpack_from("<If", rec, 0)
            start = 24 + 4 * flag
            if flag > 0:
                label = struct.unpack_from("<f", rec, 24)[0]
            img = np.asarray(Image.open(io.BytesIO(rec[start:])).convert("RGB"))
            x = torch.from_numpy(img.transpose(2, 0, 1).astype(np.float32)).unsqueeze(0)
            x = (x / 255.0 - 0.5) / 0.5
            emb = F.normalize(net(x))
            cos = torch.mm(emb, F.normalize(kernel, dim=0)).clamp(-1, 1)
            y = int(label)
            # eval-trainset's defaults, the reference's CosFace training head: s = 64, m = 0.35.
            logits = 64.0 * cos
            logits[0, y] = 64.0 * (cos[0, y] - 0.35)
            probs.append(float(torch.softmax(logits, dim=1)[0, y]))
    np.save(out, np.array(probs, dtype=np.float64))


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "encode":
        encode(sys.argv[2], sys.argv[3])
    elif cmd == "decode":
        decode(sys.argv[2])
    elif cmd == "pofx":
        pofx(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        raise SystemExit(f"unknown command {cmd}")
