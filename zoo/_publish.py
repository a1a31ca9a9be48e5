"""Publish a Hub-layout model directory to a Hugging Face Hub repo.

    from sslzoo import zoo
    zoo.publish("runs/rotation-alexnet/model", "my-org/rotation-alexnet")   # -> PublishResult

The directory is validated first and nothing is sent when it fails: the README.md front matter
must parse as a model card with ``license``, ``tags`` and ``model-index`` (as the cards rendered
from cards/ have), config.json must record the sha256 of model.safetensors and match it, and the
model must load strictly (``load_dir``). Then ``HfApi.create_repo(exist_ok=True)``, a branch for
``revision`` when it is not ``main``, and one ``upload_folder`` commit. The token is whatever
huggingface_hub resolves (``HF_TOKEN``, ``hf auth login``); the endpoint is ``HF_ENDPOINT``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from ._errors import ZooError
from ._hub import CARD_FILE, CONFIG_FILE, WEIGHTS_FILE, load_dir, parse_hub_name, read_config, sha256_file

# Hidden files, editor/atomic-write leftovers and caches are never uploaded.
IGNORE_PATTERNS = [".*", "**/.*", "*.tmp", "*.partial", "**/*.tmp", "__pycache__/*", "**/__pycache__/*"]
_REPO_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")


@dataclass
class PublishResult:
    repo_id: str
    revision: str
    commit_oid: str
    commit_url: str
    endpoint: str
    files: list[str] = field(default_factory=list)

    @property
    def hub_name(self) -> str:
        """What ``zoo.load`` takes to get this exact upload back."""
        return f"hf-hub:{self.repo_id}@{self.commit_oid}"


def parse_repo(repo: str) -> tuple[str, str | None]:
    """'ORG/NAME', 'hf-hub:ORG/NAME' or either with '@REV' -> (repo_id, revision or None)."""
    text = str(repo).strip()
    repo_id, rev = parse_hub_name(text if text.startswith("hf-hub:") else f"hf-hub:{text}")
    if not all(_REPO_PART.match(p) and ".." not in p and not p.endswith((".", "-")) for p in repo_id.split("/")):
        raise ZooError(f"{repo!r}: not a valid Hub repo id (ORG/NAME of letters, digits, '-', '_', '.')")
    return repo_id, rev


def check_card(text: str) -> list[str]:
    """Problems with a README.md model card (empty list: it is fine)."""
    from huggingface_hub import ModelCard

    if not text.startswith("---"):
        return [f"{CARD_FILE} has no YAML front matter (render it with save_pretrained / cards.render_card)"]
    try:
        data = ModelCard(text, ignore_metadata_errors=False).data
    except Exception as e:  # yaml.YAMLError, ValueError from an unparsable model-index, ...
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return [f"{CARD_FILE} front matter does not parse as model-card metadata ({first})"]
    meta = data.to_dict()
    problems = []
    if not meta.get("license"):
        problems.append(f"{CARD_FILE} front matter has no license")
    if not meta.get("tags"):
        problems.append(f"{CARD_FILE} front matter has no tags")
    if not data.eval_results:
        problems.append(f"{CARD_FILE} front matter has no model-index results "
                        "(run `sslzoo probe DIR` to evaluate the model and re-render its card)")
    return problems


def validate(directory: str | Path) -> dict:
    """Check that ``directory`` is a complete, consistent model directory; return its config.
    Raises ZooError listing every problem found."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ZooError(f"{directory}: not a directory (publish takes a model directory in Hub layout)")
    problems: list[str] = []
    card = directory / CARD_FILE
    if card.is_file():
        problems += check_card(card.read_text(encoding="utf-8", errors="replace"))
    else:
        problems.append(f"{CARD_FILE} is missing (the model card; save_pretrained writes it)")
    weights = directory / WEIGHTS_FILE
    config: dict = {}
    try:
        config = read_config(directory)  # regular file, bounded size, finite JSON, schema (zoo/_validate.py)
    except ZooError as e:
        problems.append(str(e))
    if not weights.is_file():
        problems.append(f"{WEIGHTS_FILE} is missing")
    elif config:
        expected = (config.get("weights") or {}).get("sha256")
        actual = sha256_file(weights)
        if not expected:
            problems.append(f"{CONFIG_FILE} records no sha256 for {WEIGHTS_FILE} (re-save with save_pretrained)")
        elif expected != actual:
            problems.append(f"{WEIGHTS_FILE} sha256 {actual} does not match {expected} recorded in {CONFIG_FILE}")
    if not problems:
        try:
            load_dir(directory, verify=False)  # builds the model, loads strictly (sha checked just above)
        except ZooError as e:
            problems.append(f"the model does not load: {e}")
    if problems:
        raise ZooError(f"{directory}: not published, fix first:\n  - " + "\n  - ".join(problems))
    return config


def _files(directory: Path) -> list[str]:
    from huggingface_hub.utils import filter_repo_objects

    paths = sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file())
    return list(filter_repo_objects(paths, ignore_patterns=IGNORE_PATTERNS))


def _hub_error(e: Exception, repo_id: str, endpoint: str) -> ZooError:
    """huggingface_hub / httpx failures -> one line saying what to do."""
    from huggingface_hub import get_token
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    where = f"{repo_id} on {endpoint}"
    if isinstance(e, OfflineModeIsEnabled):
        return ZooError(f"{where}: cannot publish with HF_HUB_OFFLINE=1 set; unset it to reach the Hub")
    if isinstance(e, HfHubHTTPError) and e.response is not None:
        status = e.response.status_code
        server = (e.server_message or "").strip().splitlines()
        detail = f" ({server[0]})" if server else ""
        if status in (401, 403):
            if get_token() is None:
                return ZooError(f"{where}: the Hub wants a token and none was found{detail}; set HF_TOKEN or run "
                                "`hf auth login` (a token with write access)")
            return ZooError(f"{where}: the Hub refused the token (HTTP {status}){detail}; check HF_TOKEN / "
                            f"`hf auth login` and that the token may write to {repo_id.split('/')[0]}")
        return ZooError(f"{where}: the Hub answered HTTP {status}{detail}")
    first = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return ZooError(f"{where}: cannot reach the Hub ({type(e).__name__}: {first})")


def publish(directory: str | Path, repo: str, revision: str | None = None, private: bool = False,
            commit_message: str | None = None) -> PublishResult:
    """Validate ``directory`` and upload it to Hub repo ``repo`` ('ORG/NAME'), on branch ``revision``
    (default ``main``; created from main when missing). Returns the commit; load it back with
    ``zoo.load(result.hub_name)``. Nothing is uploaded when validation fails."""
    import httpx2  # huggingface_hub's HTTP client (2.x)
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    directory = Path(directory)
    repo_id, rev_in_name = parse_repo(repo)
    if revision and rev_in_name and revision != rev_in_name:
        raise ZooError(f"{repo!r} names revision {rev_in_name!r} but --revision is {revision!r}")
    revision = revision or rev_in_name or "main"
    config = validate(directory)
    files = _files(directory)
    name = config.get("name") or directory.name
    api = HfApi()
    try:
        api.create_repo(repo_id, repo_type="model", private=True if private else None, exist_ok=True)
        if revision != "main":
            api.create_branch(repo_id, repo_type="model", branch=revision, exist_ok=True)
        info = api.upload_folder(folder_path=str(directory), repo_id=repo_id, repo_type="model", revision=revision,
                                 commit_message=commit_message or f"Upload {name} with sslzoo",
                                 ignore_patterns=IGNORE_PATTERNS)
    except (HfHubHTTPError, OfflineModeIsEnabled, httpx2.HTTPError) as e:
        raise _hub_error(e, repo_id, api.endpoint) from None
    return PublishResult(repo_id=repo_id, revision=revision, commit_oid=info.oid, commit_url=info.commit_url,
                         endpoint=api.endpoint, files=files)
