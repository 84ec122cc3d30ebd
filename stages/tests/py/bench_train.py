"""PyTorch side of stages/benches/train.rs: images/s of one SGD training step (forward, CosFace,
backward, backbone clip 5, two SGD optimisers) of an iResNet at 112x112 on the CPU.
Prints a human line and `images_per_s=<value>`."""
import argparse
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from golden import IResNet, head_logits  # noqa: E402

DEPTHS = {"iresnet18": [2, 2, 2, 2], "iresnet34": [3, 4, 6, 3], "iresnet50": [3, 4, 14, 3], "iresnet100": [3, 13, 30, 3]}

ap = argparse.ArgumentParser()
ap.add_argument("--net", default="iresnet18")
ap.add_argument("--batch", type=int, default=32)
ap.add_argument("--steps", type=int, default=5)
ap.add_argument("--threads", type=int, default=os.cpu_count())
a = ap.parse_args()
torch.set_num_threads(a.threads)
classes = 1000
net = IResNet(DEPTHS[a.net], dropout=0.4).train()
kernel = torch.nn.Parameter(torch.randn(512, classes) * 0.01)
opt_b = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
opt_h = torch.optim.SGD([kernel], lr=0.01, momentum=0.9, weight_decay=5e-4)
x = torch.rand(a.batch, 3, 112, 112) * 2 - 1
y = torch.randint(0, classes, (a.batch,))


def step():
    logits, _ = head_logits("cosface", net(x), kernel, y, 64.0, 0.35)
    loss = F.cross_entropy(logits, y)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(net.parameters(), max_norm=5, norm_type=2)
    opt_b.step()
    opt_h.step()
    opt_b.zero_grad()
    opt_h.zero_grad()


for _ in range(2):
    step()
t0 = time.perf_counter()
for _ in range(a.steps):
    step()
secs = time.perf_counter() - t0
ips = a.batch * a.steps / secs
print(f"PyTorch {a.net} 112x112 batch {a.batch}: {ips:.2f} images/s ({secs / a.steps:.3f} s/step, {a.threads} threads)")
print(f"images_per_s={ips}")
