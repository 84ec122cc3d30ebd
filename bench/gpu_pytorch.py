"""PyTorch eager side of bench/gpu.sh: one training step of iResNet + CosFace (s 64, m 0.35) at
112x112, SGD (momentum 0.9, weight decay 5e-4) on backbone and head, backbone gradients clipped
to 5, as the project's `train` step (stages/benches/train.rs is the tch side). Runs on a GPU
(`--device cuda`) or, for a quick check of the script, on the CPU.

  gpu_pytorch.py --batch 512 --precision amp            # images/s; last line JSON
  gpu_pytorch.py --save-init init.safetensors           # seeded weights for both sides
  gpu_pytorch.py --init init.safetensors --losses 50    # the losses of 50 steps on seeded batches

--precision: fp32; amp = fp16 autocast of the backbone + torch.amp.GradScaler (the reference's
recipe); bf16 = bfloat16 autocast of the backbone. The margin head and the loss stay in fp32. As in
the project, mixed precision applies on CUDA only (fp32 on a CPU).
"""
import argparse
import json
import os
import sys
import time

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "stages", "tests", "py"))
from golden import IResNet, head_logits  # noqa: E402

DEPTHS = {"iresnet18": [2, 2, 2, 2], "iresnet34": [3, 4, 6, 3], "iresnet50": [3, 4, 14, 3], "iresnet100": [3, 13, 30, 3]}


def seeded_batch(k, batch, classes, device):
    """Step k's batch, made on the CPU from seed 1000 + k (the tch side draws the same)."""
    torch.manual_seed(1000 + k)
    x = torch.rand(batch, 3, 112, 112) * 2 - 1
    y = torch.randint(classes, (batch,))
    return x.to(device), y.to(device)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--net", default="iresnet50")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--dropout", type=float, default=0.4)
    ap.add_argument("--precision", choices=["fp32", "amp", "bf16"], default="fp32")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--save-init")
    ap.add_argument("--init")
    ap.add_argument("--losses", type=int)
    a = ap.parse_args()
    dev = torch.device(a.device)
    torch.manual_seed(0)
    if a.net == "iresnet-tiny":  # the project's small test network (a quick CPU check)
        net = IResNet([1, 1, 1, 1], (16, 32, 64, 128), 16, (112, 112), emb=512, dropout=a.dropout)
    else:
        net = IResNet(DEPTHS[a.net], dropout=a.dropout)
    net = net.to(dev).train()
    kernel = torch.nn.Parameter((torch.randn(512, a.classes) * 0.01).to(dev))
    if a.save_init:
        from safetensors.torch import save_file

        state = {f"backbone.{k}": v.detach().cpu().contiguous() for k, v in net.state_dict().items() if "num_batches_tracked" not in k}
        state["header.kernel"] = kernel.detach().cpu().contiguous()
        save_file(state, a.save_init)
        print(json.dumps({"saved": a.save_init}))
        return
    if a.init:
        from safetensors.torch import load_file

        state = load_file(a.init)
        net.load_state_dict({k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}, strict=False)
        with torch.no_grad():
            kernel.copy_(state["header.kernel"].to(dev))
    opt_b = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    opt_h = torch.optim.SGD([kernel], lr=0.1, momentum=0.9, weight_decay=5e-4)
    # Mixed precision is CUDA-only in the project (fp32 on a CPU): the same here.
    cuda = dev.type == "cuda"
    scaler = torch.amp.GradScaler(dev.type, enabled=a.precision == "amp" and cuda)
    cast = {"amp": torch.float16, "bf16": torch.bfloat16}.get(a.precision) if cuda else None

    def step(x, y, lr):
        for o in (opt_b, opt_h):
            for g in o.param_groups:
                g["lr"] = lr
        with torch.autocast(dev.type, dtype=cast or torch.float32, enabled=cast is not None):
            emb = net(x)
        logits, _ = head_logits("cosface", emb.float(), kernel, y, 64.0, 0.35)
        loss = F.cross_entropy(logits, y)
        opt_b.zero_grad()
        opt_h.zero_grad()
        scaler.scale(loss).backward()
        scaler.unscale_(opt_b)
        torch.nn.utils.clip_grad_norm_(net.parameters(), max_norm=5, norm_type=2)
        scaler.step(opt_b)
        scaler.step(opt_h)
        scaler.update()
        return loss

    if a.losses:
        losses = [float(step(*seeded_batch(k, a.batch, a.classes, dev), 0.1).detach()) for k in range(a.losses)]
        print(json.dumps({"losses": losses, "loss_scale": scaler.get_scale() if scaler.is_enabled() else None}))
        return
    x = (torch.rand(a.batch, 3, 112, 112) * 2 - 1).to(dev)
    y = torch.randint(a.classes, (a.batch,)).to(dev)
    for _ in range(2):
        step(x, y, 0.01)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(a.steps):
        loss = step(x, y, 0.01)
        loss.item()  # as the tch side, which reads every loss back
    secs = time.perf_counter() - t0
    ips = a.batch * a.steps / secs
    print(f"PyTorch {a.net} 112x112 batch {a.batch} {a.precision} on {a.device}: {ips:.2f} images/s ({secs / a.steps:.3f} s/step)")
    print(json.dumps({"images_per_s": ips, "batch": a.batch, "net": a.net, "precision": a.precision, "device": a.device}))


if __name__ == "__main__":
    main()
