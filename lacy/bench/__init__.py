"""Benchmarks (``lacy bench ...``): each reports ratios against a baseline measured in the same process."""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import pandas as pd


def result_table(result: Mapping[str, Any], keys: Iterable[str] | None = None) -> pd.DataFrame:
    """A benchmark result as a one-column ``value`` table: the given ``keys`` in order, or every scalar field."""
    chosen = list(keys) if keys is not None else [k for k, v in result.items() if not isinstance(v, (list, dict))]
    return pd.Series({k: result[k] for k in chosen}, name="value").to_frame()
