"""Shared fixtures: composing the real configs, and one tiny mini-DISC per test session."""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from isc_research.config import config_dir

CONF = config_dir()


def compose_config(name: str = "train", overrides: list[str] | tuple = ()) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name=name, overrides=list(overrides))


def import_extra(module: str, extra: str):
    """`module`, or skip the calling test module when an optional extra is not installed — except under CI=1
    (.ci/run sets it; `make test` installs the dev extra, which includes every extra), where a missing
    extra fails the run instead of quietly skipping its tests."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        message = f"{module} is not installed ({error}): pip install 'isc-research[{extra}]'"
        if os.environ.get("CI") == "1":
            pytest.fail(f"CI=1 but {message}; `make test` installs it with the dev extra", pytrace=False)
        pytest.skip(message, allow_module_level=True)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """Session-wide data folder: the tiny mini-DISC of `debug=smoke` is built there once."""
    return tmp_path_factory.mktemp("data")


@pytest.fixture
def smoke_cfg(data_dir, tmp_path):
    """A composed `debug=smoke` training config writing into this test's tmp_path."""

    def make(*overrides: str) -> DictConfig:
        cfg = compose_config(
            "train", ["debug=smoke", f"paths.data_dir={data_dir}", f"paths.output_dir={tmp_path / 'run'}", *overrides]
        )
        OmegaConf.resolve(cfg)
        return cfg

    return make


@pytest.fixture
def one_torch_thread():
    """Tiny models: one intra-op thread (on a busy 2-core machine two threads made a forward ~100× slower).
    Modules that need it say `pytestmark = pytest.mark.usefixtures("one_torch_thread")`."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def extra_class_images(tmp_path_factory) -> Path:
    """A folder standing in for ImageNet's train folder (data.extra_classes.root): 8 images shipped inside
    installed packages, shrunk to 96 px, in two class sub-folders as ImageNet's are."""
    from isc_research.data.mini_disc import embedded_source_images
    from isc_research.images import fit_long_side, load_image

    folder = tmp_path_factory.mktemp("extra_classes")
    sources = embedded_source_images()[:8]
    assert len(sources) == 8, "the packaged images (scikit-image, scikit-learn, matplotlib) are missing"
    for i, source in enumerate(sources):
        (folder / f"n{i % 2:08d}").mkdir(exist_ok=True)
        fit_long_side(load_image(source), 96).save(folder / f"n{i % 2:08d}" / f"img_{i}.jpg")
    return folder
