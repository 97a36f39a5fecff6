"""Shared fixtures: one smoke-profile synthbio cache per test session (cheap, built once)."""

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("LACY_GENERATION_CACHE", "off")  # tests that count decoding must decode; test_generation_cache turns it on


@pytest.fixture(scope="session")
def smoke_profile():
    from lacy.profiles import get_profile

    return get_profile("smoke")


@pytest.fixture(scope="session")
def cache_root(tmp_path_factory):
    """A cache folder shared by the whole test session."""
    return tmp_path_factory.mktemp("lacy-cache")


@pytest.fixture(scope="session")
def smoke_datamodule(smoke_profile, cache_root):
    from lacy.data.datamodule import LacyDataModule

    dm = LacyDataModule("synthbio", smoke_profile, seed=0, cache_root=cache_root)
    dm.prepare_data()
    dm.setup()
    return dm
