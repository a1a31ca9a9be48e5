"""``sslzoo publish`` and ``sslzoo pull``: the Hugging Face Hub side of the zoo.

The endpoint is ``HF_ENDPOINT`` (default huggingface.co), the token whatever huggingface_hub
resolves (``HF_TOKEN``, ``hf auth login``), the cache ``HF_HOME`` / ``HF_HUB_CACHE``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from ._cli_common import friendly_errors


def publish(
    directory: Path = typer.Argument(..., help="model directory in Hub layout (model.safetensors, config.json, README.md)"),
    repo: str = typer.Option(..., "--repo", help="target Hub repo ORG/NAME (created when missing)"),
    revision: Optional[str] = typer.Option(None, "--revision", help="branch to commit to (default main; created from main when missing)"),
    private: bool = typer.Option(False, "--private", help="create the repo private"),
    commit_message: Optional[str] = typer.Option(None, "--commit-message", help="default: 'Upload NAME with sslzoo'"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
):
    """Validate a model directory (card metadata, config sha256, strict load) and upload it to the Hub.
    Nothing is uploaded when validation fails."""
    from sslzoo import zoo

    with friendly_errors():
        res = zoo.publish(directory, repo, revision=revision, private=private, commit_message=commit_message)
    if as_json:
        print(json.dumps({"repo_id": res.repo_id, "revision": res.revision, "commit": res.commit_oid,
                          "commit_url": res.commit_url, "endpoint": res.endpoint, "files": res.files,
                          "load": res.hub_name}))
        return
    print(f"published {directory} -> {res.repo_id}@{res.revision} ({len(res.files)} files: {', '.join(res.files)})")
    print(f"commit {res.commit_oid}  {res.commit_url}")
    print(f"load it with: zoo.load(\"hf-hub:{res.repo_id}" + (f"@{res.revision}" if res.revision != "main" else "")
          + f"\")  (this exact commit: {res.hub_name})")


def pull(
    name: str = typer.Argument(..., help="zoo name (a registry entry on the Hub) or hf-hub:ORG/NAME[@REV]"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
):
    """Download a model into the Hugging Face cache (checking its sha256) and print where it is, so that
    it loads later with no network (HF_HUB_OFFLINE=1)."""
    from sslzoo import zoo
    from sslzoo.zoo._hub import CONFIG_FILE, WEIGHTS_FILE, sha256_file
    from sslzoo.zoo._registry import PACKAGE_WEIGHTS

    with friendly_errors():
        directory = zoo.resolve(name)
        config = zoo.read_config(directory)
        expected = (config.get("weights") or {}).get("sha256")
        weights = directory / WEIGHTS_FILE
        if not weights.is_file():
            raise zoo.ZooError(f"{name}: {weights} is missing")
        actual = sha256_file(weights)
        if expected and actual != expected:
            raise zoo.ZooError(f"{name}: {WEIGHTS_FILE} sha256 {actual} does not match {expected} in {CONFIG_FILE}")
    from huggingface_hub import constants

    resolved = directory.resolve()
    where = ("package" if resolved.is_relative_to(PACKAGE_WEIGHTS.resolve()) else
             "hub-cache" if resolved.is_relative_to(Path(constants.HF_HUB_CACHE).resolve()) else "local")
    if as_json:
        print(json.dumps({"name": name, "path": str(directory), "where": where, "sha256": actual}))
        return
    if where == "package":
        print(f"{name}: ships inside the package, nothing to download: {directory}")
    elif where == "local":
        print(f"{name}: on local disk, nothing to download: {directory}")
    else:
        print(f"{name}: cached at {directory}")
    print(f"sha256 {actual} ({WEIGHTS_FILE}) verified")
