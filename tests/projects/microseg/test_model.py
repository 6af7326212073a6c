"""microseg variants: their parameter counts (the figures docs/microseg.md quotes), the budget refusal, and export.

.venv/bin/python -m pytest tests/projects/microseg/test_model.py -q
"""

from __future__ import annotations

import pytest
import torch

from projects.microseg.model import (
    MODELS,
    BudgetError,
    CompactASPP,
    CoordinateAttention,
    GradientFeatures,
    MultiDilationDSConv,
    count_parameters,
    create_model,
    variant_counts,
)

COUNTS = {"micronet": 8_553, "hwnet": 9_209, "mininet": 9_807, "mininet_50k": 50_015}


def test_every_variant_has_its_documented_parameter_count() -> None:
    assert variant_counts() == COUNTS
    assert sum(count < 10_000 for count in COUNTS.values()) >= 3
    assert 40_000 <= COUNTS["mininet_50k"] <= 60_000


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_variant_segments_any_multiple_of_eight(name: str) -> None:
    model = create_model(name, max_params=0).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, 40, 56))
    assert out.shape == (2, 1, 40, 56)
    assert torch.isfinite(out).all()


def test_a_model_over_budget_is_refused_naming_its_count_and_the_budget() -> None:
    with pytest.raises(BudgetError, match=r"'mininet_50k' has 50,015 parameters, over the budget of 10,000"):
        create_model("mininet_50k")
    assert count_parameters(create_model("mininet_50k", max_params=60_000)) == 50_015
    with pytest.raises(BudgetError, match="over the budget of 9,000"):
        create_model("mininet", max_params=9_000)


def test_unknown_variant_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown microseg variant 'tiny'; known: \['hwnet', 'micronet'"):
        create_model("tiny")


def test_blocks_keep_shapes_and_the_sobel_filters_are_not_parameters() -> None:
    x = torch.rand(1, 8, 16, 12)
    assert MultiDilationDSConv(8, 8)(x).shape == x.shape
    assert CoordinateAttention(8)(x).shape == x.shape
    assert CompactASPP(8)(x).shape == x.shape
    edges = GradientFeatures(3, 4)
    assert edges(torch.rand(1, 3, 16, 12)).shape == (1, 4, 16, 12)
    assert count_parameters(edges) == 3 * 4 + 2 * 4  # the 1x1 projection and its BatchNorm only


def test_gradient_features_answer_an_edge_and_not_a_flat_image() -> None:
    edges = GradientFeatures(3, 4).eval()
    flat = edges.project(torch.zeros(1, 3, 8, 8)).detach()
    step = torch.zeros(1, 3, 16, 16)
    step[..., 8:] = 1.0
    grad = torch.nn.functional.conv2d(step.mean(1, keepdim=True), edges.kernels, padding=1)
    assert grad[0, 0, 4:12, 7:9].abs().min() > 0.2 and grad[0, 0, 4:12, 2:5].abs().max() == 0
    assert flat.shape == (1, 4, 8, 8)
