"""Strings from dotted ``model_args`` overrides are read as YAML 1.2 plain scalars."""

import logging

import pytest
import yaml

from terratorch_hsi_peft.utils.cli_values import cli_scalar, cli_scalars, cli_typed, task_model_args

# Where PyYAML (YAML 1.1) and the YAML 1.2 core schema agree, PyYAML is the reference.
AGREED = ["9", "-3", "+7", "0", "0.1", "-2.5", "1.5e-4", ".5", "true", "True", "false", "FALSE"]
AGREED += ["null", "Null", "~", "spectralgpt_vit_base", "attn.q", "UNetDecoder", "/data/x.pth"]


@pytest.mark.parametrize("text", AGREED)
def test_agrees_with_yaml_where_yaml_1_1_and_1_2_agree(text):
    expected = yaml.safe_load(text)
    got = cli_scalar(text)
    assert got == expected and type(got) is type(expected)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1e5", 100000.0), ("2E-3", 0.002), ("3.", 3.0)],  # YAML 1.2 floats PyYAML reads as strings
)
def test_yaml_1_2_floats(text, expected):
    got = cli_scalar(text)
    assert got == expected and type(got) is float


NOT_CORE = ["on", "off", "yes", "no", "y", "n", "", "1_000", "0x10", "[1, 2]"]


@pytest.mark.parametrize("text", NOT_CORE)
def test_strings_that_are_not_core_scalars_stay_strings(text):
    assert cli_scalar(text) == text


def test_none_is_the_null_terratorchs_cli_hands_over():
    # "--model.init_args.model_args.peft_config null" reaches the factory as the string "None".
    assert cli_scalar("None") is None


def test_non_strings_pass_through_untouched():
    values = {"a": 3, "b": [1, "2"], "c": {"d": "false"}, "e": None, "f": 0.5}
    for value in values.values():
        assert cli_scalar(value) is value
    assert cli_scalars(values, "test") == values  # nested values are not touched


def test_top_level_strings_are_converted_and_logged(caplog):
    with caplog.at_level(logging.INFO, logger="terratorch_hsi_peft.utils.cli_values"):
        out = cli_scalars({"num_classes": "9", "backbone_pretrained": "false", "x": "y"}, "F")
    assert out == {"num_classes": 9, "backbone_pretrained": False, "x": "y"}
    assert "F: read string values as YAML scalars" in caplog.text
    assert "num_classes='9' -> 9" in caplog.text and "'x'" not in caplog.text


def test_text_options_keep_their_string_unless_null():
    values = {"backbone_ckpt_path": "2024", "ckpt_sha256": "null", "depth": "2", "ckpt_path": 5}
    text = ("backbone_ckpt_path", "ckpt_sha256", "ckpt_path")
    assert cli_scalars(values, "test", text=text) == {
        "backbone_ckpt_path": "2024",  # a file named 2024, not the number
        "ckpt_sha256": None,
        "depth": 2,
        "ckpt_path": 5,  # a non-string is left alone
    }


# -- issue 33: read once where the values enter ------------------------------------------------


class _Factory:
    @cli_typed(skip=("task",))
    def build_model(self, task, flag=False, width=None, **kwargs):
        return task, flag, width, kwargs


def test_cli_typed_reads_every_argument_once_at_the_entry(caplog):
    with caplog.at_level(logging.INFO, logger="terratorch_hsi_peft.utils.cli_values"):
        got = _Factory().build_model(
            "1", flag="true", width="0.5", items=[1, 2], peft_config="null", ckpt_path="2024"
        )
    # task is skipped; text keys keep their string; one log line names the entry.
    assert got == ("1", True, 0.5, {"items": [1, 2], "peft_config": None, "ckpt_path": "2024"})
    assert type(got[2]) is float
    assert len(caplog.records) == 1 and "_Factory.build_model" in caplog.text


def test_task_model_args_types_what_readers_of_the_task_get():
    hparams = {"model_args": {"num_classes": "3", "backbone_pretrained": "true", "x": "null"}}
    assert task_model_args(hparams) == {"num_classes": 3, "backbone_pretrained": True, "x": None}
    assert task_model_args({}) == {} and task_model_args(None) == {}
