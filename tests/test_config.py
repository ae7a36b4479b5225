"""Configuration: files, flags, errors that name the key, and the reference kept true to the code."""

from __future__ import annotations

from pathlib import Path

import pytest

from dopamine_py.config import OPTIONS, ConfigError, load_settings, options_markdown
from support import REPO, dopamine_command, run


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "dopamine.toml"
    path.write_text(text)
    return path


def test_file_then_flags(tmp_path):
    config = write(tmp_path, 'data_dir = "store"\n[server]\naet = "LAB"\ndimse_port = 4242\n')
    settings = load_settings(config, {"server.dimse_port": 5555, "server.aet": None})
    assert settings["server.aet"] == "LAB"
    assert settings["server.dimse_port"] == 5555
    assert settings.data_dir == (tmp_path / "store").resolve()


@pytest.mark.parametrize("text, message", [
    ('[server]\ndimse_prot = 1\n', "unknown key 'server.dimse_prot'"),
    ('[sever]\naet = "X"\n', r"unknown section \[sever\]"),
    ('[server]\ndimse_port = "11112"\n', "key 'server.dimse_port' must be an integer"),
    ('[server]\ndimse_port = 0\n', "key 'server.dimse_port' must be a TCP port"),
    ('[server]\naet = "THIS_AE_TITLE_IS_TOO_LONG"\n', "key 'server.aet' must be an AE title"),
    ('[storage]\nduplicate_policy = "overwrite"\n', "key 'storage.duplicate_policy' must be one of"),
    ('[storage]\nindexed_attributes = ["PatientNmae"]\n', "unknown attribute 'PatientNmae'"),
    ('[server\naet = 1\n', "not valid TOML"),
])
def test_bad_configuration_names_the_key(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        load_settings(write(tmp_path, text))


def test_cli_reports_a_bad_configuration_and_exits_2(tmp_path):
    config = write(tmp_path, '[server]\nhttp_port = 70000\n')
    proc = run(dopamine_command("serve", "--config", str(config)), check=False)
    assert proc.returncode == 2
    assert "key 'server.http_port' must be a TCP port" in proc.stderr


def test_reference_documents_every_option():
    text = (REPO / "docs" / "configuration.md").read_text()
    assert options_markdown() in text, "docs/configuration.md is stale: regenerate with `python -m dopamine_py.config`"
    assert len(OPTIONS) == options_markdown().count("\n| `")
