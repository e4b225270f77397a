"""ResNets of any depth >= 3 for 32x32 images, built from a stage plan (kd_lightning/plans.py).

Each new stage starts with stride 2 and doubles the width; a unit is one conv (single-conv unit) or
two (a BasicBlock) around a shortcut, ReLU after the sum.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from kd_lightning.plans import READINGS, Plan, Reading, net_plan


def conv_bn(c_in: int, c_out: int, kernel: int = 3, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(c_out),
    )


class ResidualUnit(nn.Module):
    """One (single-conv) or two (BasicBlock) 3x3 conv+BN layers around a shortcut; ReLU after the sum."""

    def __init__(self, c_in: int, c_out: int, stride: int, n_convs: int):
        super().__init__()
        layers: list[nn.Module] = [conv_bn(c_in, c_out, stride=stride)]
        if n_convs == 2:
            layers += [nn.ReLU(inplace=True), conv_bn(c_out, c_out)]
        self.body = nn.Sequential(*layers)
        self.shortcut = (
            nn.Identity() if stride == 1 and c_in == c_out else conv_bn(c_in, c_out, kernel=1, stride=stride)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + self.shortcut(x))


class ResNet(nn.Module):
    def __init__(self, plan: Plan, num_classes: int = 10, width: int = 64):
        super().__init__()
        self.plan = plan
        self.stem = nn.Sequential(conv_bn(3, width), nn.ReLU(inplace=True))
        units, c_in = [], width
        for s, stage in enumerate(plan):
            c_out = width * 2**s
            for i, n_convs in enumerate(stage):
                units.append(ResidualUnit(c_in, c_out, stride=2 if s > 0 and i == 0 else 1, n_convs=n_convs))
                c_in = c_out
        self.body = nn.Sequential(*units)
        self.fc = nn.Linear(c_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) -> (B, num_classes)
        x = self.body(self.stem(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def resnet(
    depth: int | None = None,
    num_classes: int = 10,
    width: int = 64,
    *,
    reading: str = Reading.blocks.value,
    plan: Sequence[Sequence[int]] | None = None,
) -> ResNet:
    """Build a ResNet-`depth` under `reading`, or the network of an explicit `plan` (then depth may be None).

    Raises ValueError for a depth below 3, a non-integer, a width below 1 or a malformed plan.
    """
    if plan is None and (isinstance(depth, bool) or not isinstance(depth, int) or depth < 3):
        raise ValueError(f"depth must be an integer >= 3 (stem conv + at least one body conv + linear), got {depth!r}")
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise ValueError(f"width must be an integer >= 1, got {width!r}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    return ResNet(net_plan(depth, reading, plan), num_classes, width)


def estimate(plan: Plan, width: int, num_classes: int = 10, image_size: int = 32) -> tuple[int, int, int]:
    """(parameters, activation values per image, multiply-adds per image) of ResNet(plan), without building it.

    The start-up check uses it to refuse a network the machine cannot hold before allocating any of
    it. Activations count what a training step keeps for the backward pass: each conv's,
    BatchNorm's and ReLU's output, and each residual sum.
    """
    params = 3 * width * 9 + 2 * width  # stem conv + BatchNorm
    acts = 3 * width * image_size**2
    macs = 3 * width * 9 * image_size**2
    c_in = width
    for s, stage in enumerate(plan):
        c_out, area = width * 2**s, (image_size // 2**s) ** 2
        for i, n_convs in enumerate(stage):
            params += c_in * c_out * 9 + 2 * c_out + (n_convs - 1) * (c_out * c_out * 9 + 2 * c_out)
            macs += (c_in * c_out * 9 + (n_convs - 1) * c_out * c_out * 9) * area
            if (s > 0 and i == 0) or c_in != c_out:  # 1x1 conv + BatchNorm shortcut
                params += c_in * c_out + 2 * c_out
                macs += c_in * c_out * area
            acts += (3 * n_convs + 2) * c_out * area
            c_in = c_out
    return params + c_in * num_classes + num_classes, acts, macs + c_in * num_classes


def count_layers(model: nn.Module) -> dict[str, int]:
    """Weighted layers as He et al. count them: 3x3 convs and linear layers (1x1 shortcut convs excluded)."""
    convs = sum(1 for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size != (1, 1))
    linears = sum(1 for m in model.modules() if isinstance(m, nn.Linear))
    return {"conv": convs, "linear": linears, "depth": convs + linears}


def readings_table(depths: Sequence[int] = (3, 4, 5, 6, 10), width: int = 64) -> str:
    """A markdown table of each depth's plan, parameters and forward FLOPs per 32x32 image under each reading."""
    lines = [
        f"| model | reading | plan | stage widths | params (w={width}) | MFLOPs per image |",
        "|---|---|---|---|---:|---:|",
    ]
    for depth in depths:
        for reading, to_plan in READINGS.items():
            plan = to_plan(depth)
            params, _, macs = estimate(plan, width)
            widths = ", ".join(f"{width * 2**s}" for s in range(len(plan)))
            lines.append(f"| ResNet-{depth} | {reading} | {plan} | {widths} | {params:,} | {2 * macs / 1e6:,.1f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # python -m kd_lightning.models: the table in docs/models.md
    print(readings_table())
