"""Shipped models resolve by name; a local directory of the same name always wins."""

from __future__ import annotations

import pytest

import memdlm.backbones.shipped as shipped


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
    from memdlm.backbones.modeling import load_model

    with pytest.raises(FileNotFoundError, match=r"does not exist \(shipped models, usable by name: base\)"):
        load_model("no-such-model")


# --- hub ids through the local Hugging Face cache (never downloaded) ------------------------
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture()
def hub_cache(tmp_path, monkeypatch):
    """HF_HUB_CACHE pointing at an empty folder, offline, and any network connection an error."""
    import socket

    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def refuse(*_args, **_kwargs):
        raise AssertionError("memdlm tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    return cache


def cache_model(cache, repo_id: str, tok, model) -> str:
    """The hub cache's layout for ``repo_id``: refs/main -> snapshots/<commit>/ with the files."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / COMMIT
    model.save_pretrained(snapshot)
    tok.save_pretrained(snapshot)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    return str(snapshot)


def test_a_cached_hub_id_loads_from_the_cache(hub_cache, tok, make_tiny_model, capsys):
    import json

    import torch

    from memdlm.cli import main
    from memdlm.backbones.modeling import forward_logits, load_model
    from memdlm.runs.run import Run

    model = make_tiny_model(seed=3).eval()
    snapshot = cache_model(hub_cache, "some-org/tiny-dlm", tok, model)
    assert shipped.resolve_model("some-org/tiny-dlm") == snapshot
    ids = torch.randint(10, len(tok), (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(forward_logits(load_model("some-org/tiny-dlm").eval(), ids), forward_logits(model, ids))
    assert Run.load("some-org/tiny-dlm").path == shipped.Path(snapshot)
    capsys.readouterr()
    assert main(["generate", "--model", "some-org/tiny-dlm", "--prompt", "Hi", "--max-new-tokens", "3",
                 "--steps", "2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["prompt"] == "Hi"


def test_an_uncached_hub_id_says_where_the_files_must_be(hub_cache, tok, make_tiny_model, capsys):
    from memdlm.cli import main

    cache_model(hub_cache, "some-org/other", tok, make_tiny_model())  # another model is cached
    assert shipped.resolve_model("some-org/tiny-dlm") == "some-org/tiny-dlm"
    capsys.readouterr()
    rc = main(["generate", "--model", "some-org/tiny-dlm", "--prompt", "Hi"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert f"not in the local Hugging Face cache {hub_cache} (set by HF_HUB_CACHE, else HF_HOME/hub)" in err[0]
    assert "some-org/tiny-dlm" in err[0] and "hf download some-org/tiny-dlm" in err[0]


def test_the_cache_follows_hf_home_when_hf_hub_cache_is_unset(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    assert shipped.hub_cache_dir() == tmp_path / "home" / "hub"
    assert not shipped.is_hub_id("/abs/path") and not shipped.is_hub_id("a/b/c") and shipped.is_hub_id("GSAI-ML/LLaDA-8B")
