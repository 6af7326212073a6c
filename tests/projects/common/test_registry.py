import pytest

from projects.common.registry import Registry


class UnknownThing(ValueError):
    pass


def test_register_create_and_named_errors():
    things = Registry("thing", UnknownThing)

    @things.register()
    def small(width: int = 2) -> int:
        return width

    things.register("big")(lambda width=10: width)
    assert sorted(things) == ["big", "small"]
    assert things.create("small", width=3) == 3
    with pytest.raises(UnknownThing, match=r"unknown thing 'huge'; known: \['big', 'small'\]"):
        things.create("huge")
    with pytest.raises(UnknownThing, match=r"thing 'small' has no parameter\(s\) \['depth'\]; it takes \['width'\]"):
        things.create("small", depth=1)
    with pytest.raises(ValueError, match="registered twice"):
        things.register("small")(lambda: 0)
