"""vislearn.registry.Registry: the one name -> entry table behind models, converters, recipes, reproductions."""

from __future__ import annotations

import pytest

from vislearn.errors import UserError
from vislearn.models import list_models
from vislearn.recipes import get_recipe, list_recipes
from vislearn.registry import Registry
from vislearn.reproduce import get_reproduction, list_reproductions


def test_register_get_list_contains_iterate():
    reg: Registry[int] = Registry("widget")
    assert reg.register("beta", 2) == 2
    reg.register("alpha", 1)
    reg.register("alpha_big", 10)
    assert reg.get("alpha") == 1
    assert reg.names() == ["alpha", "alpha_big", "beta"]
    assert reg.names("alpha*") == ["alpha", "alpha_big"]
    assert reg.names("?eta") == ["beta"]
    assert list(reg) == ["beta", "alpha", "alpha_big"]  # registration order
    assert reg.values() == [2, 1, 10]
    assert "beta" in reg and "gamma" not in reg and len(reg) == 3


def test_duplicates_and_unknown_names():
    reg: Registry[str] = Registry("widget")
    reg.register("sprocket", "s")
    with pytest.raises(RuntimeError, match="widget 'sprocket' is registered twice"):
        reg.register("sprocket", "t")
    assert reg.get("sprocket") == "s"  # the first registration stays
    with pytest.raises(UserError, match=r"^unknown widget 'sprockt'; closest: sprocket$"):
        reg.get("sprockt")
    reg.register("gear", "g")
    with pytest.raises(UserError, match=r"^unknown widget 'zzz'; known: gear, sprocket$"):
        reg.get("zzz")
    with pytest.raises(UserError, match=r"^unknown thing 'x'; known: \(none yet\)$"):
        Registry("thing").get("x")


def test_load_hook_runs_before_lookups():
    def load() -> None:  # e.g. import the modules whose decorators fill the registry
        if "late" not in reg._entries:
            reg.register("late", 7)

    reg: Registry[int] = Registry("lazy", load=load)
    assert "late" in reg and reg.get("late") == 7 and reg.names() == ["late"] and list(reg) == ["late"]


def test_the_library_registries_share_it():
    assert "mlp" in list_models() and list_recipes() == sorted(list_recipes()) and "classify" in list_recipes()
    assert get_recipe("classify").name == "classify"
    assert get_reproduction(list_reproductions()[0]).name == list_reproductions()[0]
    with pytest.raises(UserError, match=r"unknown recipe 'clasify'; closest: classify"):
        get_recipe("clasify")
    with pytest.raises(UserError, match=r"unknown reproduction 'nope'; (closest|known): "):
        get_reproduction("nope")
