"""Helper specs: the one place where a helper spec string is parsed into a helper (paper §5, inference).

The grammar (also listed by ``lacy --help``): ``doc`` (the oracle: handed the gold subject's
reference documents), ``retrieval`` (BM25 over every document of the corpus, not told the subject),
``hf:PATH_OR_ID`` (a model folder or a hub id already in the local cache), ``smollm2`` (the offline
GGUF) and ``http(s)://HOST:PORT[/v1]`` (an OpenAI-compatible completions server, e.g. ``lacy serve``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence

if TYPE_CHECKING:
    from lacy.cascade.helpers import Helper

HELPER_SPECS = ("doc", "retrieval", "hf:PATH_OR_ID", "smollm2", "http(s)://HOST:PORT[/v1]")
REMOTE_API_KEY_ENV = "LACY_HELPER_API_KEY"


def _looks_like_path(location: str) -> bool:
    return location.startswith(("/", ".", "~")) or location.endswith("/") or location.count("/") > 1


def build_helper(spec: str, *, documents: Mapping[str, Sequence[str]] | None = None, device: str = "cpu",
                 fallback: bool = False) -> "Helper":
    """A helper from a spec string.

    ``doc`` (the oracle; needs ``documents``: subject → reference texts), ``retrieval`` (BM25 over all
    of ``documents``, not told the subject; :mod:`lacy.cascade.retrieval`), ``hf:PATH_OR_ID`` (a model folder or a
    hub id in the local cache), ``smollm2`` (the offline GGUF), ``http(s)://HOST:PORT[/v1]`` (an
    OpenAI-compatible completions server, e.g. ``lacy serve``; its bearer token, if any, is read from
    ``$LACY_HELPER_API_KEY``; ``fallback``: count its unavailable answers as unresolved calls). A model
    folder is checked against the hashes recorded at export; hub ids load from the local cache only.
    """
    # torch and transformers load with the helpers, not with this grammar (the CLI imports it to list the specs).
    from lacy.cascade.helpers import DocumentHelper, LMHelper, smollm2_helper

    valid = f"valid helper specs: {', '.join(HELPER_SPECS)}"
    if spec == "doc":
        if documents is None:
            raise ValueError("helper 'doc' needs documents (subject -> reference texts); pass documents=...")
        return DocumentHelper(documents)
    if spec == "retrieval":
        if documents is None:
            raise ValueError("helper 'retrieval' needs the corpus documents (subject -> texts); pass documents=...")
        from lacy.cascade.retrieval import RetrievalHelper

        return RetrievalHelper.from_corpus(documents)
    if spec == "smollm2":
        return smollm2_helper(device)
    if spec.startswith(("http://", "https://")):
        from lacy.cascade.remote import RemoteHelper  # httpx is only needed for remote helpers

        # A bearer token for the server comes from the environment, never from the command line.
        return RemoteHelper(spec, api_key=os.environ.get(REMOTE_API_KEY_ENV) or None, fallback=fallback)
    if spec.startswith("hf:"):
        location = spec[3:]
        if not location:
            raise ValueError(f"helper spec 'hf:' needs a model folder or hub id after the colon; {valid}")
        path = Path(location).expanduser()
        if path.exists():
            if not (path / "config.json").is_file():
                raise FileNotFoundError(f"{path} has no config.json; expected a folder written by save_pretrained")
            from lacy.io import verify_checksums

            verify_checksums(path)
            return LMHelper.from_pretrained(str(path), device=device)
        if _looks_like_path(location):
            raise FileNotFoundError(f"no model folder at {path}; train or export a model there, or pass hf:HUB_ID")
        try:
            return LMHelper.from_pretrained(location, device=device, local_files_only=True)
        except OSError:
            raise FileNotFoundError(
                f"{location!r} is neither a local folder nor a hub model in the local cache, and lacy never downloads: "
                f"fetch its weights beforehand (`hf download {location}`, or `huggingface-cli download {location}`) "
                "or pass hf:FOLDER"
            ) from None
    raise ValueError(f"unknown helper spec {spec!r}; {valid}")
