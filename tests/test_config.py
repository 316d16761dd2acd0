"""Model parameters are checked when they are made, and engine errors are typed by what went wrong."""

from __future__ import annotations

import pytest

import engine


@pytest.mark.parametrize(
    "values,message",
    [
        ({"strength_formula": "log_view"}, "model parameter strength_formula must be one of log_views, views, binary"),
        ({"max_neighbors": -1}, "model parameter max_neighbors must be from 0 to 1000, not -1"),
        ({"heavy_threshold": 1.5}, "model parameter heavy_threshold must be from 0 to 1, not 1.5"),
        ({"min_support": 0}, "model parameter min_support must be at least 1, not 0"),
        ({"half_life_days": "7"}, "model parameter half_life_days must be a number, not '7'"),
        ({"max_neighbors": 2.5}, "model parameter max_neighbors must be a whole number, not 2.5"),
        ({"resurface_light": 1}, "model parameter resurface_light must be true or false, not 1"),
        ({"similarity_alpha": float("nan")}, "model parameter similarity_alpha must be a finite number, not nan"),
        ({"prior_floor": 1.0}, "model parameter prior_floor must be at least 0 and below 1, not 1.0"),
        ({"prior_floor": -0.1}, "model parameter prior_floor must be at least 0 and below 1, not -0.1"),
    ],
)
def test_a_bad_parameter_is_one_line_naming_it_and_what_is_allowed(values, message):
    with pytest.raises(engine.BadArgument) as caught:
        engine.ModelParams(**values)
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


def test_unknown_parameter_names_are_refused_with_the_known_ones():
    with pytest.raises(engine.BadArgument, match="unknown model parameter 'max_neighbours'; known: .*max_neighbors"):
        engine.ModelParams.from_dict({"max_neighbours": 20})


def test_a_whole_number_for_a_float_parameter_becomes_a_float():
    assert engine.ModelParams(half_life_days=3).half_life_days == 3.0
    assert engine.ModelParams(half_life_days=3) == engine.ModelParams(half_life_days=3.0)
    assert engine.ModelParams.from_dict(engine.ModelParams().as_dict()) == engine.ModelParams()


def test_unknown_user_item_and_filter_have_their_own_errors(tiny):
    with pytest.raises(engine.UnknownUser, match="user 'nobody' is not known"):
        tiny.history("nobody")
    with pytest.raises(engine.UnknownItem, match="item 'i999' is not in the catalogue"):
        tiny.similar("i999")
    with pytest.raises(engine.UnknownFilter, match="no item has genre 'western'; known: action, drama"):
        tiny.popular(genre="western")
    assert issubclass(engine.UnknownUser, engine.UnknownValue)  # one base for callers that do not care which
