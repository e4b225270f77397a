import pytest
import torch
from torch import nn

from kd_lightning.models import ResidualUnit, count_layers, estimate, resnet
from kd_lightning.plans import blocks_plan, net_plan, plan_depth, stages_plan


@pytest.mark.parametrize("depth", range(3, 13))
def test_depth_counts_stem_body_convs_and_one_linear(depth):
    model = resnet(depth, num_classes=10, width=8)
    assert count_layers(model) == {"conv": depth - 1, "linear": 1, "depth": depth}
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize(
    "depth, plan",
    [
        (3, [[1]]),
        (4, [[2]]),
        (5, [[2], [1]]),
        (6, [[2], [2]]),
        (10, [[2]] * 4),
        (18, [[2, 2]] * 4),
        (12, [[2, 2], [2], [2], [2]]),
    ],
)
def test_units_fill_stages_in_order_and_spread_evenly(depth, plan):
    assert blocks_plan(depth) == plan


def test_resnet5_ends_with_a_strided_single_conv_unit_at_double_width():
    units = list(resnet(5, width=16).body)
    assert [len([m for m in u.body.modules() if isinstance(m, nn.Conv2d)]) for u in units] == [2, 1]
    last_conv = units[1].body[0][0]
    assert last_conv.stride == (2, 2) and last_conv.out_channels == 32
    assert isinstance(units[1].shortcut, nn.Sequential)  # 1x1 conv + BN where the shape changes
    assert isinstance(units[0].shortcut, nn.Identity)


def test_stage_widths_double_and_spatial_size_halves():
    model = resnet(10, width=8)
    x = model.stem(torch.randn(1, 3, 32, 32))
    shapes = []
    for unit in model.body:
        x = unit(x)
        shapes.append(tuple(x.shape[1:]))
    assert shapes == [(8, 32, 32), (16, 16, 16), (32, 8, 8), (64, 4, 4)]


def test_resnet18_has_the_usual_parameter_count():
    assert sum(p.numel() for p in resnet(18).parameters()) == 11_173_962


def test_batchnorm_follows_every_conv():
    model = resnet(6, width=8)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(convs) == len(bns)


@pytest.mark.parametrize("depth", [2, 0, -1, 3.5, "4", True])
def test_invalid_depth_raises_value_error_naming_it(depth):
    with pytest.raises(ValueError, match=rf"depth must be an integer >= 3.*{depth!r}"):
        resnet(depth)


@pytest.mark.parametrize("width", [0, -3, 2.0])
def test_invalid_width_raises_value_error_naming_it(width):
    with pytest.raises(ValueError, match=rf"width must be an integer >= 1.*{width!r}"):
        resnet(4, width=width)


def test_residual_unit_adds_shortcut_before_relu():
    unit = ResidualUnit(4, 4, stride=1, n_convs=1).eval()
    for p in unit.body.parameters():
        nn.init.zeros_(p)  # body outputs 0 (BN bias 0, weight 0): the unit is relu(identity)
    x = torch.randn(2, 4, 8, 8)
    assert torch.equal(unit(x), torch.relu(x))


# ----------------------------------------------------------------------------- readings and plans


@pytest.mark.parametrize(
    "depth, plan",
    [(3, [[1]]), (4, [[1], [1]]), (5, [[1], [1], [1]]), (6, [[1]] * 4), (7, [[2], [1], [1], [1]]), (10, [[2]] * 4)],
)
def test_the_stages_reading_spreads_the_convs_over_up_to_four_stages(depth, plan):
    assert stages_plan(depth) == plan
    model = resnet(depth, width=8, reading="stages")
    assert count_layers(model) == {"conv": depth - 1, "linear": 1, "depth": depth}


def test_the_stages_reading_reaches_width_8w_at_resnet6_where_blocks_stop_at_2w():
    for reading, widths in (("blocks", [8, 8, 16, 16]), ("stages", [8, 16, 32, 64])):
        model = resnet(6, width=8, reading=reading)
        convs = [m for m in model.body.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
        assert [c.out_channels for c in convs] == widths
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_an_explicit_plan_sets_the_depth_and_replaces_the_reading():
    model = resnet(num_classes=10, width=8, plan=[[1], [2], [1]])
    assert model.plan == [[1], [2], [1]] and plan_depth(model.plan) == 6
    assert count_layers(model)["depth"] == 6
    assert net_plan(4, "blocks", [[1], [1], [1], [1]]) == [[1]] * 4


@pytest.mark.parametrize("plan", [[], [[]], [[3]], [[1]] * 5, [[0]]])
def test_a_malformed_plan_is_refused_naming_it(plan):
    with pytest.raises(ValueError, match=r"plan=.* is not allowed; it must list 1 to 4 stages"):
        resnet(width=8, plan=plan)


@pytest.mark.parametrize("reading", ["blocks", "stages"])
@pytest.mark.parametrize("depth", [3, 4, 5, 6, 10, 18])
def test_estimate_matches_the_built_network_in_parameters_and_multiply_adds(depth, reading):
    from torch.utils.flop_counter import FlopCounterMode

    model = resnet(depth, width=8, reading=reading)
    params, _, macs = estimate(net_plan(depth, reading), width=8)
    assert params == sum(p.numel() for p in model.parameters())
    with FlopCounterMode(display=False) as counter:
        model(torch.randn(1, 3, 32, 32))
    assert 2 * macs == counter.get_total_flops()  # convolutions and the linear layer, 2 FLOPs per multiply-add


def test_run_names_tell_readings_plans_and_methods_apart(tmp_path):
    from conftest import make_cfg

    def name(*overrides: str) -> str:
        return make_cfg(tmp_path, *overrides).run_name

    assert name("mode=baseline", "student.depth=6") == "baseline-r6-w8-s0-b128-e2"
    assert name("mode=baseline", "student.depth=6", "student.reading=stages") == "baseline-r6-w8-stages-s0-b128-e2"
    assert name("mode=baseline", "student.plan=[[1],[1],[1],[1]]") == "baseline-r6-w8-p1_1_1_1-s0-b128-e2"
    assert name("mode=teacher", "teacher.reading=stages") == "teacher-r6-w8-stages-s0-b128-e2"
    assert name("kd.divergence=reverse") == "kd-r4-w8-t6-rev-a0.5-T4-s0-b128-e2"
    assert name("kd.method=dkd") == "kd-r4-w8-t6-dkd-a1-b8-T4-s0-b128-e2"
    assert name("kd.method=dkd", "kd.dkd.warmup_epochs=5") == "kd-r4-w8-t6-dkd-a1-b8-T4-wu5-s0-b128-e2"
    assistant = f"teacher.ckpt={tmp_path}/runs/kd-r6-w8-t6-a0.5-T4-s0-b128-e2/checkpoints/best.ckpt"
    assert name("student.depth=3", "teacher.depth=6", assistant) == "kd-r3-w8-tkd6-a0.5-T4-s0-b128-e2"
    stages_teacher = make_cfg(tmp_path, "teacher.reading=stages")
    assert stages_teacher.teacher.ckpt == f"{tmp_path}/teachers/r6-w8-stages-s0.ckpt"  # never the blocks teacher's
