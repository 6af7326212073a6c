import pytest

from projects.common.schedule import warmup_cosine


def test_warmup_rises_then_cosine_falls():
    f = warmup_cosine(10, 100)
    warm = [f(s) for s in range(10)]
    assert warm == sorted(warm) and warm[0] < 0.2
    assert f(10) == pytest.approx(1.0)
    tail = [f(s) for s in range(10, 101)]
    assert tail == sorted(tail, reverse=True)
    assert f(100) == pytest.approx(0.01)


def test_degenerate_lengths_do_not_divide_by_zero():
    assert 0 < warmup_cosine(5, 1)(0) <= 1
