"""Stage plans: how a ResNet's depth becomes its stages, without building anything (no torch here).

depth = 1 stem conv + (depth - 2) body convs + 1 linear layer, He et al.'s count. The body is a chain
of residual units (two-conv BasicBlocks or single-conv units) in up to four stages of widths w, 2w,
4w, 8w. A *plan* lists each stage's units by their conv count, e.g. [[2], [1]]. The study does not
say how ResNet-3..6 are laid out, so two *readings* turn a depth into a plan:

- blocks (the default): two-conv blocks first, one single-conv unit at the end when depth - 2 is
  odd; with up to four units unit i sits in stage i, with more they spread evenly, earlier stages
  first. ResNet-5 = [[2], [1]], ResNet-6 = [[2], [2]]: the small students never reach stages 3, 4.
- stages: the body convs spread over as many of the four stages as there are convs, so even
  ResNet-6 = [[1], [1], [1], [1]] reaches width 8w; a stage's convs pair into blocks when it has
  more than one. Both readings agree from ResNet-10 on.

An explicit plan (student.plan) replaces the reading; the depth then follows from it. Run names,
run records and report rows tell networks apart by `reading_tag`.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum

Plan = list[list[int]]  # per stage, the conv count (1 or 2) of each residual unit


class Reading(str, Enum):
    """How a depth becomes a stage plan."""

    blocks = "blocks"  # two-conv blocks first, stages filled in order (ResNet-6 = [[2], [2]])
    stages = "stages"  # the convs spread over up to four stages (ResNet-6 = [[1], [1], [1], [1]])


def blocks_plan(depth: int) -> Plan:
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


def stages_plan(depth: int) -> Plan:
    """The stages reading: e.g. depth 5 -> [[1], [1], [1]], 6 -> [[1]] * 4, 7 -> [[2], [1], [1], [1]]."""
    body = depth - 2
    n_stages = min(4, body)
    convs = [body // n_stages + (s < body % n_stages) for s in range(n_stages)]
    return [[2] * (c // 2) + [1] * (c % 2) for c in convs]


READINGS = {Reading.blocks.value: blocks_plan, Reading.stages.value: stages_plan}


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


def reading_of(plan: Sequence[Sequence[int]]) -> str | None:
    """The reading that builds `plan` from its depth ('blocks' first, where both do), or None for a plan of its own."""
    plan = [list(stage) for stage in plan]
    return next((name for name, make in READINGS.items() if make(plan_depth(plan)) == plan), None)


def reading_tag(reading: str | None, plan: Sequence[Sequence[int]] | None) -> str:
    """'' (the default blocks reading), 'stages', or 'p1_1_1_1' for an explicit plan: what run names, report
    rows and figure labels add after the depth and width. A record's `reading` is 'plan' for an explicit plan."""
    if reading == "plan" or (reading is None and plan is not None):
        return "p" + "_".join("".join(map(str, stage)) for stage in plan or [])
    return "" if reading in (None, Reading.blocks.value) else reading
