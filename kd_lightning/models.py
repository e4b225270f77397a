"""ResNets of any depth >= 3 for 32x32 images, counted the way He et al. count layers.

depth = 1 stem conv + (depth - 2) body convs + 1 linear layer. The body is a chain of residual
units (two-conv BasicBlocks or single-conv units) in up to four stages of widths w, 2w, 4w, 8w,
each new stage starting with stride 2. A *plan* lists each stage's units by their conv count,
e.g. [[2], [1]]. The study does not say how ResNet-3..6 are laid out, so two readings turn a
depth into a plan:

- blocks (the default): two-conv blocks first, one single-conv unit at the end when depth - 2 is
  odd; with up to four units unit i sits in stage i, with more they spread evenly, earlier stages
  first. ResNet-5 = [[2], [1]], ResNet-6 = [[2], [2]]: the small students never reach stages 3, 4.
- stages: the body convs spread over as many of the four stages as there are convs, so even
  ResNet-6 = [[1], [1], [1], [1]] reaches width 8w; a stage's convs pair into blocks when it has
  more than one. Both readings agree from ResNet-10 on.

An explicit plan (student.plan) replaces the reading; the depth then follows from it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from kd_lightning.config import Reading

Plan = list[list[int]]  # per stage, the conv count (1 or 2) of each residual unit


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


def stage_plan(depth: int) -> Plan:
    """The blocks reading: e.g. depth 5 -> [[2], [1]], 10 -> [[2]] * 4, 12 -> [[2, 2], [2], [2], [2]]."""
    body = depth - 2
    units = [2] * (body // 2) + [1] * (body % 2)
    n_stages = min(4, len(units))
    per_stage = [len(units) // n_stages + (s < len(units) % n_stages) for s in range(n_stages)]
    plan, start = [], 0
    for n in per_stage:
        plan.append(units[start : start + n])
        start += n
    return plan


def spread_plan(depth: int) -> Plan:
    """The stages reading: e.g. depth 5 -> [[1], [1], [1]], 6 -> [[1]] * 4, 7 -> [[2], [1], [1], [1]]."""
    body = depth - 2
    n_stages = min(4, body)
    convs = [body // n_stages + (s < body % n_stages) for s in range(n_stages)]
    return [[2] * (c // 2) + [1] * (c % 2) for c in convs]


READINGS = {Reading.blocks.value: stage_plan, Reading.stages.value: spread_plan}


def check_plan(plan: Sequence[Sequence[int]]) -> Plan:
    """The plan as lists; ValueError unless it has 1-4 non-empty stages of units with 1 or 2 convs."""
    plan = [list(stage) for stage in plan]
    if not 1 <= len(plan) <= 4 or not all(plan) or any(n not in (1, 2) for stage in plan for n in stage):
        raise ValueError(
            f"plan={plan} is not allowed; it must list 1 to 4 stages, each a non-empty list of units of 1 or 2 "
            "convs, e.g. [[1], [1], [1], [1]]"
        )
    return plan


def plan_depth(plan: Sequence[Sequence[int]]) -> int:
    """He et al.'s layer count of a plan: the stem conv, the body convs and the linear layer."""
    return 2 + sum(sum(stage) for stage in plan)


def net_plan(depth: int, reading: str = Reading.blocks.value, plan: Sequence[Sequence[int]] | None = None) -> Plan:
    """The plan a network is built from: `plan` when given, else `reading`'s plan for `depth`."""
    if plan is not None:
        return check_plan(plan)
    if reading not in READINGS:
        raise ValueError(f"reading={reading!r} is unknown; allowed: {', '.join(READINGS)}")
    return READINGS[reading](depth)


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
