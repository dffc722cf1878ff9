"""Dataset source ``hf``: a Hugging Face hub dataset, read from the local cache only.

tuneyard never downloads at run time: the hub is treated as offline while the dataset loads,
so a dataset that is not already in the local Hugging Face cache fails at once with a clear
message instead of hanging on the network.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from tuneyard.core.components import DatasetSource
from tuneyard.core.errors import DataError
from tuneyard.core.hookspecs import hookimpl

if TYPE_CHECKING:
    import datasets


class HfOptions(BaseModel):
    """Options of the ``hf`` source."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(description="hub dataset id, e.g. 'rajpurkar/squad' (must be cached locally)")
    name: str | None = Field(default=None, description="dataset configuration (subset) name")
    split: str = Field(default="train", description="split to load, e.g. train, validation")
    limit: int | None = Field(default=None, ge=1, description="keep only the first N rows")


@contextmanager
def hub_offline() -> Iterator[None]:
    """Make ``datasets`` and ``huggingface_hub`` offline for the duration of the block.

    Both libraries read ``HF_HUB_OFFLINE`` once at import, so the environment variables and the
    already-imported config constants are all set, and restored afterwards.
    """
    import datasets.config
    import huggingface_hub.constants as hub_constants

    env_keys = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
    saved_env = {key: os.environ.get(key) for key in env_keys}
    saved = (datasets.config.HF_HUB_OFFLINE, hub_constants.HF_HUB_OFFLINE)
    os.environ.update({key: "1" for key in env_keys})
    datasets.config.HF_HUB_OFFLINE = hub_constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE, hub_constants.HF_HUB_OFFLINE = saved
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class HfSource(DatasetSource):
    """Rows of one split of a hub dataset from the local Hugging Face cache.

    Columns are the dataset's own. ``id`` may also be a local folder of data files, which
    ``datasets.load_dataset`` reads as a dataset; such a folder is read afresh at every load,
    because the ``datasets`` cache knows local files by path and modification time only, and
    would serve stale rows for a file rewritten within the same second (or restored mtime).

    Raises:
        DataError: the dataset (or its ``name`` configuration) is not in the local cache
            and the hub is offline, with a pointer to the ``jsonl``/``csv``/``parquet`` sources
            for local files; an unknown ``split``; a split with no rows.
    """

    name = "hf"
    description = "a Hugging Face hub dataset from the local cache (never downloads)"
    Options = HfOptions

    def load(self) -> datasets.Dataset:
        import datasets

        opts = self.options
        what = f"'{opts.id}'" + (f" (config '{opts.name}')" if opts.name else "")
        try:
            local = Path(opts.id).expanduser().is_dir()
            with hub_offline():
                ds = datasets.load_dataset(opts.id, opts.name, split=opts.split,
                                           download_mode="force_redownload" if local else None)
        except (ConnectionError, FileNotFoundError, datasets.exceptions.DatasetNotFoundError):
            raise DataError(
                f"dataset {what} is not in the local Hugging Face cache and the hub is offline "
                "(tuneyard never downloads); for local files use the jsonl, csv or parquet "
                "source"
            ) from None
        except ValueError as exc:
            hint = "check the 'name' and 'split' options"
            raise DataError(f"dataset {what}: {hint}: {exc}") from None
        if len(ds) == 0:
            raise DataError(f"dataset {what}: split '{opts.split}' has no rows")
        if opts.limit is not None and opts.limit < len(ds):
            ds = ds.select(range(opts.limit))
        return ds


@hookimpl
def register_dataset_sources(register):
    register(HfSource)
