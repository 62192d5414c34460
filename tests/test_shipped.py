"""Shipped models resolve by name; a local directory of the same name always wins."""

from __future__ import annotations

import pytest

import memdlm.shipped as shipped


@pytest.fixture()
def assets(tmp_path, monkeypatch):
    """A stand-in asset folder with one shipped model ("base") and one folder without a config."""
    root = tmp_path / "assets"
    (root / "base").mkdir(parents=True)
    (root / "base" / "config.json").write_text("{}")
    (root / "half").mkdir()
    monkeypatch.setattr(shipped, "SHIPPED_DIR", root)
    return root


def test_shipped_models_are_the_folders_with_a_config(assets):
    assert shipped.shipped_models() == ["base"]


def test_a_name_resolves_to_the_asset_and_a_local_directory_wins(assets, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert shipped.resolve_model("base") == str(assets / "base")
    (tmp_path / "base").mkdir()
    assert shipped.resolve_model("base") == "base"
    assert shipped.resolve_model("half") == "half"  # no config.json: not a shipped model
    assert shipped.resolve_model("sub/base") == "sub/base"  # paths are never names


def test_a_missing_model_names_the_shipped_ones(assets):
    from memdlm.modeling import load_model

    with pytest.raises(FileNotFoundError, match=r"does not exist \(shipped models, usable by name: base\)"):
        load_model("no-such-model")
