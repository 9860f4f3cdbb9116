"""``python -m retrievalkit``: every command and option has a help text, every command an example."""
from __future__ import annotations

import argparse

import pytest

from retrievalkit.__main__ import main, parser


def _commands() -> dict[str, argparse.ArgumentParser]:
    (sub,) = [a for a in parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def _help(capsys, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as done:
        main(argv)
    assert done.value.code == 0
    return capsys.readouterr().out


def _examples(text: str) -> list[str]:
    """The lines under the help's "Example(s):" heading."""
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if line.strip().rstrip(":") in ("Example", "Examples")]
    assert starts, f"no Example heading in:\n{text}"
    after = lines[starts[0] + 1:]
    return [line.strip() for line in after[:next((i for i, l in enumerate(after) if not l.strip()), len(after))]]


def test_the_commands_are_exercises_grade_bench():
    assert sorted(_commands()) == ["bench", "exercises", "grade"]


def test_the_top_help_lists_every_command_with_its_help_and_an_example_of_each(capsys):
    text = _help(capsys, ["--help"])
    (sub,) = [a for a in parser()._actions if isinstance(a, argparse._SubParsersAction)]
    for choice in sub._choices_actions:
        assert choice.help and choice.dest in text and choice.help.split(":")[0] in text
    examples = _examples(text)
    for command in _commands():
        assert any(e.startswith(f"python -m retrievalkit {command}") for e in examples), command


@pytest.mark.parametrize("command", ["exercises", "grade", "bench"])
def test_each_command_documents_every_option_and_shows_an_example(capsys, command):
    sub = _commands()[command]
    text = _help(capsys, [command, "--help"])
    assert sub.description and sub.description.splitlines()[0] in text
    for action in sub._actions:
        assert action.help and action.help.strip(), f"{command}: {action.option_strings or action.dest} has no help"
        for name in action.option_strings or [action.metavar or action.dest]:
            assert name in text, f"{command}: {name} missing from its help"
        first_words = (action.help % {"default": action.default}).split()[:3]
        assert " ".join(first_words) in " ".join(text.split()), f"{command}: help of {action.dest} not shown"
    examples = _examples(text)
    assert examples and all(e.startswith(f"python -m retrievalkit {command}") for e in examples)


@pytest.mark.parametrize("command", ["exercises", "grade", "bench"])
def test_options_that_take_a_value_state_their_default(capsys, command):
    squeezed = "".join(_help(capsys, [command, "--help"]).split())  # the wrapper may break a long path anywhere
    for action in _commands()[command]._actions:
        if not action.option_strings or action.required or action.nargs == 0:  # positionals, --out, flags
            continue
        assert "(default:" in action.help, f"{command} {action.option_strings}: no default stated"
        if action.default is not None:
            assert f"(default:{action.default})" in squeezed, f"{command} {action.option_strings}: {action.default}"


def test_each_example_parses_to_its_command():
    # the examples are real command lines: the parser accepts them as written
    text_of = {c: s.epilog for c, s in _commands().items()}
    for command, epilog in text_of.items():
        for example in _examples(epilog):
            args = parser().parse_args(example.split()[3:])
            assert args.command == command


def test_grade_warns_against_a_seed_reused_across_rounds_and_refuses_no_files(capsys, tmp_path):
    seed = next(a for a in _commands()["grade"]._actions if "--seed" in a.option_strings)
    assert "secret, fresh" in seed.help and "never reuse a fixed seed across rounds" in seed.help
    assert main(["grade", str(tmp_path), "--out", str(tmp_path / "out"), "--files", "0"]) == 2
    assert "--files must be >= 1, got 0" in capsys.readouterr().err and not (tmp_path / "out").exists()
