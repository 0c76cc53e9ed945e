"""Fixtures shared by test modules: the procedural scene and one small TensoRF-VM model trained
on it (about a minute on two cores), trained once per test session rather than once per module
that compresses or bakes it. Passes are pure, so sharing the model is safe."""

from __future__ import annotations

from dataclasses import replace

import pytest

from nerfzip.data.procedural import load_procedural
from nerfzip.rendering.model import RadianceModel
from nerfzip.training.config import defaults_for
from nerfzip.training.trainer import train


@pytest.fixture(scope="session")
def procedural_scene():
    return load_procedural()


@pytest.fixture(scope="session")
def trained_vm(procedural_scene, tmp_path_factory) -> RadianceModel:
    cfg = replace(defaults_for("procedural", "tensorf-vm"), iters=300)
    return train(procedural_scene, cfg, tmp_path_factory.mktemp("trained_vm"), quiet=True)
