"""The study's safety rules, without training: ``--set`` warns that its values are code."""

from __future__ import annotations

import pytest

from monai_adv.study.cli import build_parser
from monai_adv.study.setup import parse_override


def _help() -> str:
    return " ".join(build_parser().format_help().split())


def test_set_help_warns_that_values_are_executed_and_says_how_to_pass_a_literal():
    text = _help()
    for phrase in ("TRUST WARNING: a string starting with '$' is executed as Python code",
                   "exactly '@ID' is a reference", "starting with '%' is a macro", "'_target_' is instantiated",
                   "only use values you trust", "MONAI has no escape character",
                   """--set 'tag=$"$abc"' gives $abc"""):
        assert phrase in text, phrase


@pytest.mark.parametrize("text, literal", [('tag=$"$abc"', "$abc"), ('tag=$"%abc"', "%abc"),
                                           ('tag=$"\\x40abc"', "@abc")])
def test_the_literal_string_recipe_of_the_help_gives_the_literal(text, literal):
    from monai.bundle import ConfigParser

    stage, key, value = parse_override(text)
    assert ConfigParser({key: value}).get_parsed_content(key) == literal
