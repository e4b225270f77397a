import pytest
import torch
from torch import nn

from kd_lightning.models import ResidualUnit, count_layers, resnet, stage_plan


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
    assert stage_plan(depth) == plan


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
