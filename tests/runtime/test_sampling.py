"""Sampling options and the stop-string scanner, without a model."""

import pytest

from edge_llm.errors import ConfigError
from edge_llm.sampling import SamplingParams, find_stop, held_back


def test_defaults_and_from_kwargs_ignores_none():
    p = SamplingParams.from_kwargs(temperature=None, max_tokens=5, stop="END")
    assert p.temperature == 0.8 and p.max_tokens == 5 and p.stop == ("END",)


@pytest.mark.parametrize(
    "kw",
    [
        {"max_tokens": 0},
        {"temperature": -0.1},
        {"top_k": -1},
        {"top_p": 0},
        {"top_p": 1.5},
        {"min_p": 2},
        {"repeat_penalty": 0},
        {"seed": -1},
        {"stop": [""]},
    ],
)
def test_out_of_range_values_are_config_errors(kw):
    with pytest.raises(ConfigError):
        SamplingParams(**kw)


def test_find_stop_finds_the_earliest_stop_after_what_was_shown():
    assert find_stop("hello world", ("world",), 0) == 6
    assert find_stop("ab STOP cd STOP", ("STOP",), 0) == 3
    assert find_stop("ab STOP", ("STOP", "ab"), 0) == 0
    assert find_stop("hello", ("xyz",), 0) is None
    # a stop string straddling the shown/unshown boundary is still found
    assert find_stop("abcSTO" + "P", ("STOP",), 5) == 3


def test_held_back_keeps_a_possible_stop_prefix_hidden():
    assert held_back("hello wor", ("world",)) == 3
    assert held_back("hello", ("world",)) == 0
    assert held_back("a\n\n", ("\n\n\n",)) == 2
    assert held_back("x<|e", ("<|end|>", "<")) == 3
