"""Golden fixtures for the tch networks, heads and optimiser (stages/src/torch/golden_tests.rs).

Usage: golden.py OUT_DIR [--r50]

Writes small safetensors files with fixed weights, inputs and the outputs PyTorch computes:
  tiny.safetensors / tiny_io.safetensors     iResNet-tiny (1 block per stage, widths 16..128) @32x32
  mfn.safetensors / mfn_io.safetensors       MobileFaceNet @112x112
  r50.safetensors / r50_io.safetensors       iResNet-50 @112x112 (only with --r50: ~175 MB)
  head_<loss>.safetensors                    each margin head: kernel, inputs, logits, loss, grads
  sgd.safetensors                            two SGD steps of iResNet-tiny + CosFace, clipped backbone

The networks and heads are written here from formats.md sections 4 and 5 (not copied from the
reference). BN running statistics are calibrated on a batch first so that eval-mode outputs are O(1).
"""
import copy
import math
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file


def conv3x3(cin, cout, stride=1):
    return nn.Conv2d(cin, cout, 3, stride, 1, bias=False)


class IBasicBlock(nn.Module):
    def __init__(self, cin, planes, stride):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin, eps=1e-5)
        self.conv1 = conv3x3(cin, planes)
        self.bn2 = nn.BatchNorm2d(planes, eps=1e-5)
        self.prelu = nn.PReLU(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn3 = nn.BatchNorm2d(planes, eps=1e-5)
        self.downsample = None
        if stride != 1 or cin != planes:
            self.downsample = nn.Sequential(nn.Conv2d(cin, planes, 1, stride, bias=False), nn.BatchNorm2d(planes, eps=1e-5))

    def forward(self, x):
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        idt = x if self.downsample is None else self.downsample(x)
        return out + idt


class IResNet(nn.Module):
    def __init__(self, layers, widths=(64, 128, 256, 512), stem=64, size=(112, 112), emb=512, dropout=0.0):
        super().__init__()
        self.conv1 = conv3x3(3, stem)
        self.bn1 = nn.BatchNorm2d(stem, eps=1e-5)
        self.prelu = nn.PReLU(stem)
        cin = stem
        for i, (n, planes) in enumerate(zip(layers, widths)):
            blocks = []
            for b in range(n):
                blocks.append(IBasicBlock(cin, planes, 2 if b == 0 else 1))
                cin = planes
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        h, w = size
        for _ in range(4):
            h, w = (h - 1) // 2 + 1, (w - 1) // 2 + 1
        self.bn2 = nn.BatchNorm2d(cin, eps=1e-5)
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(cin * h * w, emb)
        self.features = nn.BatchNorm1d(emb, eps=1e-5)
        nn.init.constant_(self.features.weight, 1.0)
        self.features.weight.requires_grad = False
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0, 0.1)

    def forward(self, x):
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = torch.flatten(self.bn2(x), 1)
        return self.features(self.fc(self.dropout(x)))


class ConvBlock(nn.Module):
    def __init__(self, cin, cout, k=1, s=1, p=0, g=1, linear=False):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, s, p, groups=g, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.prelu = None if linear else nn.PReLU(cout)

    def forward(self, x):
        x = self.bn(self.conv(x))
        return x if self.prelu is None else self.prelu(x)


class DepthWise(nn.Module):
    def __init__(self, cin, cout, g, stride, residual):
        super().__init__()
        self.conv = ConvBlock(cin, g)
        self.conv_dw = ConvBlock(g, g, 3, stride, 1, g)
        self.project = ConvBlock(g, cout, linear=True)
        self.residual = residual

    def forward(self, x):
        y = self.project(self.conv_dw(self.conv(x)))
        return x + y if self.residual else y


class Residual(nn.Module):
    def __init__(self, c, n, g):
        super().__init__()
        self.model = nn.Sequential(*[DepthWise(c, c, g, 1, True) for _ in range(n)])

    def forward(self, x):
        return self.model(x)


class GDC(nn.Module):
    def __init__(self, emb):
        super().__init__()
        self.conv_6_dw = ConvBlock(512, 512, 7, 1, 0, 512, linear=True)
        self.linear = nn.Linear(512, emb, bias=False)
        self.bn = nn.BatchNorm1d(emb, affine=False)

    def forward(self, x):
        return self.bn(self.linear(torch.flatten(self.conv_6_dw(x), 1)))


class MobileFaceNet(nn.Module):
    def __init__(self, emb=512):
        super().__init__()
        self.conv1 = ConvBlock(3, 64, 3, 2, 1)
        self.conv2_dw = ConvBlock(64, 64, 3, 1, 1, 64)
        self.conv_23 = DepthWise(64, 64, 128, 2, False)
        self.conv_3 = Residual(64, 4, 128)
        self.conv_34 = DepthWise(64, 128, 256, 2, False)
        self.conv_4 = Residual(128, 6, 256)
        self.conv_45 = DepthWise(128, 128, 512, 2, False)
        self.conv_5 = Residual(128, 2, 256)
        self.conv_6_sep = ConvBlock(128, 512)
        self.output_layer = GDC(emb)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        x = self.conv2_dw(self.conv1(x))
        x = self.conv_5(self.conv_45(self.conv_4(self.conv_34(self.conv_3(self.conv_23(x))))))
        return self.output_layer(self.conv_6_sep(x))


def calibrate(model, x):
    """Running stats := the statistics of one batch, so eval-mode outputs stay O(1)."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in bns:
        m.momentum = 1.0
    model.train()
    with torch.no_grad():
        model(x)
    for m in bns:
        m.momentum = 0.1
        m.num_batches_tracked.zero_()


def state(model):
    return {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}


def net_fixture(out, name, model, size, batch):
    calib = torch.randn(batch * 2, 3, *size)
    calibrate(model, calib)
    # Perturb affine BN/PReLU params so that a wrong layer order cannot pass by symmetry.
    with torch.no_grad():
        for n, p in model.named_parameters():
            if p.requires_grad and p.dim() == 1:
                p.add_(0.05 * torch.randn_like(p))
    save_file(state(model), os.path.join(out, f"{name}.safetensors"))
    x = torch.rand(batch, 3, *size) * 2 - 1
    # The outputs in float64, from the float32 weights saved above: the test runs its network in
    # float64 too, so what it compares is the architecture, not float32 rounding (whose order
    # differs between CPUs, kernels and thread counts: ~1e-5 relative after MobileFaceNet).
    model = copy.deepcopy(model).double()
    xd = x.double()
    model.eval()
    with torch.no_grad():
        y_eval = model(xd)
        model.train()
        y_train = model(xd)
    after = {f"after.{k}": v for k, v in state(model).items() if "running" in k}
    save_file({"x": x, "eval": y_eval, "train": y_train, **after}, os.path.join(out, f"{name}_io.safetensors"))


def l2_norm(x, axis):
    return x / torch.norm(x, 2, axis, True)


def head_logits(loss, emb, kernel, label, s, m, margins=None, t=None, h=0.333):
    """Training logits of formats.md section 5 for raw embeddings `emb`; returns (logits, new t)."""
    onehot = F.one_hot(label, kernel.shape[1]).to(emb.dtype)
    if loss == "adaface":
        eps = 1e-3
        norms = torch.norm(emb, 2, 1, True)
        cos = torch.mm(l2_norm(emb, 1), l2_norm(kernel, 0)).clamp(-1 + eps, 1 - eps)
        safe = torch.clip(norms, 0.001, 100).detach()
        ms = torch.clip((safe - safe.mean()) / (safe.std() + eps) * h, -1, 1)
        theta = torch.clip(cos.acos() + onehot * (-m * ms), eps, math.pi - eps)
        return (theta.cos() - onehot * (m + m * ms)) * s, t
    cos = torch.mm(l2_norm(emb, 1), l2_norm(kernel, 0)).clamp(-1, 1)
    if loss == "cosface":
        return (cos - m * onehot) * s, t
    if loss == "arcface":
        return torch.cos(cos.acos() + m * onehot) * s, t
    if loss.startswith("elastic"):
        mg = margins
        if loss.endswith("plus"):
            with torch.no_grad():
                _, order = torch.sort(cos[torch.arange(len(label)), label], descending=True)
                sorted_m, _ = torch.sort(margins.view(-1))
                mg = sorted_m[order].view(-1, 1)
        mh = onehot * mg
        if loss.startswith("elasticcos"):
            return (cos - mh) * s, t
        return torch.cos(cos.acos() + mh) * s, t
    if loss == "curricularface":
        target = cos[torch.arange(len(label)), label].view(-1, 1)
        sin = torch.sqrt(1.0 - target ** 2)
        cos_m = target * math.cos(m) - sin * math.sin(m)
        mask = cos > cos_m
        final = torch.where(target > math.cos(math.pi - m), cos_m, target - math.sin(math.pi - m) * m)
        with torch.no_grad():
            t = target.mean() * 0.01 + 0.99 * t
        out = torch.where(mask, cos * (t + cos), cos)
        out = out.scatter(1, label.view(-1, 1), final)
        return out * s, t
    raise ValueError(loss)


HEADS = {
    "cosface": 0.35, "arcface": 0.5, "curricularface": 0.5, "adaface": 0.4,
    "elasticcosface": 0.35, "elasticarcface": 0.5, "elasticcosface-plus": 0.35, "elasticarcface-plus": 0.5,
}


def head_fixtures(out):
    b, e, c, s = 8, 64, 10, 64.0
    for i, (loss, m) in enumerate(HEADS.items()):
        torch.manual_seed(100 + i)
        emb = (torch.randn(b, e) * torch.linspace(0.5, 3.0, b).view(-1, 1)).requires_grad_(True)
        if loss == "adaface":
            kernel = torch.empty(e, c).uniform_(-1, 1).renorm_(2, 1, 1e-5).mul_(1e5)
        else:
            kernel = torch.randn(e, c) * 0.01
        # Make the ground truth win for some samples so that every branch is exercised.
        label = torch.randint(0, c, (b,))
        with torch.no_grad():
            kernel[:, label[:4]] += 0.05 * emb[:4].t() / emb[:4].norm(dim=1)
        kernel.requires_grad_(True)
        sigma = {"elasticcosface": 0.05, "elasticarcface": 0.05, "elasticcosface-plus": 0.02, "elasticarcface-plus": 0.0175}.get(loss, 0.0)
        margins = torch.normal(m, sigma, size=(b, 1)) if sigma else torch.full((b, 1), m)
        t0 = torch.zeros(1) + (0.1 if loss == "curricularface" else 0.0)
        variants = [("", emb)]
        if loss == "adaface":
            # The reference's run: train_everything.py feeds F.normalize(backbone(img)) to the head.
            variants.append(("-reference", F.normalize(emb)))
        for suffix, head_in in variants:
            emb.grad, kernel.grad = None, None
            logits, t1 = head_logits(loss, head_in, kernel, label, s, m, margins, t0)
            ce = F.cross_entropy(logits, label)
            ce.backward()
            save_file({
                "emb": emb.detach(), "kernel": kernel.detach(), "label": label, "margins": margins,
                "t0": t0, "t1": (t1 if t1 is not None else t0).detach().view(1).clone(),
                "logits": logits.detach().contiguous(), "loss": ce.detach().view(1),
                "grad_emb": emb.grad, "grad_kernel": kernel.grad,
            }, os.path.join(out, f"head_{loss}{suffix}.safetensors"))


def sgd_fixture(out):
    torch.manual_seed(5)
    net = IResNet([1, 1, 1, 1], (16, 32, 64, 128), 16, (32, 32), emb=64)
    calibrate(net, torch.randn(16, 3, 32, 32))
    c = 10
    kernel = nn.Parameter(torch.randn(64, c) * 0.01)
    init = {**{f"backbone.{k}": v for k, v in state(net).items()}, "header.kernel": kernel.detach().clone()}
    opt_b = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    opt_h = torch.optim.SGD([kernel], lr=0.1, momentum=0.9, weight_decay=5e-4)
    net.train()
    tensors = {}
    for step in range(2):
        x = torch.rand(8, 3, 32, 32) * 2 - 1
        y = torch.randint(0, c, (8,))
        logits, _ = head_logits("cosface", net(x), kernel, y, 64.0, 0.35)
        loss = F.cross_entropy(logits, y)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(net.parameters(), max_norm=1.0, norm_type=2)
        opt_b.step()
        opt_h.step()
        opt_b.zero_grad()
        opt_h.zero_grad()
        tensors.update({f"x{step}": x, f"y{step}": y, f"loss{step}": loss.detach().view(1), f"norm{step}": norm.view(1)})
    final = {**{f"final.backbone.{k}": v for k, v in state(net).items()}, "final.header.kernel": kernel.detach().clone()}
    save_file({**init, **tensors, **final}, os.path.join(out, "sgd.safetensors"))


def main():
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(0)
    net_fixture(out, "tiny", IResNet([1, 1, 1, 1], (16, 32, 64, 128), 16, (32, 32), emb=64), (32, 32), 4)
    torch.manual_seed(1)
    net_fixture(out, "mfn", MobileFaceNet(), (112, 112), 8)
    if "--r50" in sys.argv:
        torch.manual_seed(2)
        r50 = IResNet([3, 4, 14, 3])
        with torch.no_grad():
            for mod in r50.modules():
                if isinstance(mod, nn.Conv2d):
                    fan_in = mod.weight[0].numel()
                    mod.weight.normal_(0, math.sqrt(1.0 / fan_in))
        net_fixture(out, "r50", r50, (112, 112), 2)
    head_fixtures(out)
    sgd_fixture(out)
    print(f"golden fixtures written to {out}")


if __name__ == "__main__":
    main()
