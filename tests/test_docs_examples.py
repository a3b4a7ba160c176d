"""docs/extending.md runs: its files (the fenced blocks with a `title=`) are written into a temporary project
folder, its command lines are composed with isc's configs plus that folder's (`hydra.searchpath`, as the page
says), and each object takes one real step: the loss a training step with gradients, the policy views of the
configured size, the post-processing step a whole isc-eval run on the tiny mini-DISC, the verifier a pair.
docs/architecture.md: the names it cites exist."""

from __future__ import annotations

import math
import re
import shlex
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from PIL import Image

from tests.conftest import compose_config

DOC = Path(__file__).resolve().parents[1] / "docs" / "extending.md"
BLOCK = re.compile(r"^```(\w+)([^\n]*)\n(.*?)^```", re.S | re.M)
TITLE = re.compile(r'title="([^"]+)"')
CONFIG_OF = {"isc-train": "train", "isc-eval": "eval", "isc-match": "match", "isc-show-augs": "show_augs"}
EXPECTED_FILES = {
    "my_isc/losses.py",
    "my_isc/augment.py",
    "my_isc/postprocess.py",
    "my_isc/verifiers.py",
    "conf/loss/align_uniform.yaml",
    "conf/augmentation/crop_gray.yaml",
    "conf/postprocess/centre.yaml",
    "conf/eval_grid/centre.yaml",
    "conf/verifier/histogram.yaml",
}


def doc_blocks() -> list[tuple[str, str | None, str]]:
    """(language, title or None, text) of every fenced block of docs/extending.md."""
    out = []
    for language, info, text in BLOCK.findall(DOC.read_text(encoding="utf-8")):
        title = TITLE.search(info)
        out.append((language, title.group(1) if title else None, text))
    return out


def doc_commands(project: Path) -> list[list[str]]:
    """The isc command lines of the page's bash blocks, `$PWD` being the project folder, as argv lists."""
    commands = []
    for language, _, text in doc_blocks():
        if language == "bash":
            for line in text.splitlines():
                if line.startswith("isc-"):
                    commands.append(shlex.split(line.replace("$PWD", str(project))))
    return commands


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """The page's project folder, importable (my_isc on sys.path) while this module's tests run."""
    root = tmp_path_factory.mktemp("my-project")
    (root / "my_isc").mkdir()
    (root / "my_isc" / "__init__.py").write_text("")
    for _, title, text in doc_blocks():
        if title:
            (root / title).parent.mkdir(parents=True, exist_ok=True)
            (root / title).write_text(text)
    sys.path.insert(0, str(root))
    yield root
    sys.path.remove(str(root))
    for name in [m for m in sys.modules if m == "my_isc" or m.startswith("my_isc.")]:
        del sys.modules[name]


def composed(project: Path, option: str, *extra: str):
    """The config of the page's command line that chooses `option` (e.g. loss=align_uniform), composed as the
    command would compose it (its program's config, its overrides), plus `extra` overrides."""
    for argv in doc_commands(project):
        if option in argv[1:]:
            return compose_config(CONFIG_OF[argv[0]], [*argv[1:], *extra])
    raise AssertionError(f"docs/extending.md has no command line with {option}")


def test_page_holds_every_example_file(project):
    written = {str(p.relative_to(project)) for p in project.rglob("*") if p.is_file()}
    assert written == EXPECTED_FILES | {"my_isc/__init__.py"}


def test_every_command_line_composes_with_the_project_configs(project):
    commands = doc_commands(project)
    assert {argv[0] for argv in commands} == set(CONFIG_OF)
    for argv in commands:
        assert f"hydra.searchpath=[file://{project}/conf]" in argv, argv  # absolute, as the page says
        compose_config(CONFIG_OF[argv[0]], argv[1:])


def test_loss_trains_one_step(project):
    from isc_research.losses.build import build_loss
    from isc_research.train import build_module

    cfg = composed(project, "loss=align_uniform", "debug=smoke")
    loss, callbacks = build_loss(cfg.loss, num_classes=4)
    assert type(loss).__module__ == "my_isc.losses" and callbacks == []

    # the value by hand: two images, two identical views each, orthogonal: alignment 0; each row's three other
    # embeddings are at squared distances 0, 2, 2 → uniformity = log((1 + 2·e^(−2·2)) / 3)
    e = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    out = loss(e, torch.tensor([0, 0, 1, 1]))
    assert float(out["alignment"]) == pytest.approx(0.0, abs=1e-6)
    assert float(out["uniformity"]) == pytest.approx(math.log((1 + 2 * math.exp(-4)) / 3), rel=1e-5)
    half = loss(e.half(), torch.tensor([0, 0, 1, 1]))["loss"]  # mixed precision: computed in float32
    assert half.dtype == torch.float32

    # one training step of isc-train's Lightning module: finite loss, gradients reach the backbone
    module = build_module(cfg, loss)
    torch.manual_seed(0)
    batch = {"views": torch.randn(4, 2, 3, 48, 48), "label": torch.arange(4), "skipped": 0}
    with pytest.warns(UserWarning, match="self.log"):  # no Trainer attached: Lightning skips the logging
        value = module.training_step(batch, 0)
    assert torch.isfinite(value)
    value.backward()
    grads = [p.grad for p in module.model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0


def test_policy_makes_views_of_the_configured_size(project):
    from isc_research.augment.policies import IMAGENET_MEAN, IMAGENET_STD
    from isc_research.train import build_datamodule

    cfg = composed(project, "augmentation=crop_gray", "debug=smoke", "augmentation.grayscale_p=1.0")
    policy = build_datamodule(cfg).train_transform  # as isc-train instantiates it
    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.integers(0, 256, (90, 70, 3), dtype=np.uint8))
    for image in (photo, photo.convert("L"), photo.convert("RGBA")):
        view = policy(image)
        assert view.shape == (3, cfg.data.train_size, cfg.data.train_size) == (3, 48, 48)
        assert view.dtype == torch.float32
        pixels = view * torch.tensor(IMAGENET_STD)[:, None, None] + torch.tensor(IMAGENET_MEAN)[:, None, None]
        assert torch.allclose(pixels[0], pixels[1], atol=1e-5) and torch.allclose(pixels[1], pixels[2], atol=1e-5)
        assert -1e-5 <= float(pixels.min()) and float(pixels.max()) <= 1.0 + 1e-5  # [0, 1] before normalising


def test_postprocess_step_runs_in_isc_eval(project, data_dir, tmp_path, one_torch_thread):
    """The page's isc-eval command on the tiny mini-DISC, with a classical baseline for the checkpoint."""
    import json

    from isc_research.evaluate import evaluate_checkpoint
    from isc_research.extract import read_descriptors
    from isc_research.formats import read_descriptor_submission
    from tests.test_evaluate import SMOKE_DATASET

    cfg = composed(
        project,
        "eval_grid=centre",
        "ckpt_path=null",
        "baseline=thumbnail",
        f"paths.data_dir={data_dir}",
        f"paths.output_dir={tmp_path / 'eval'}",
        "eval.num_workers=0",
        "eval.report.enabled=false",
        *SMOKE_DATASET,
    )
    summary = evaluate_checkpoint(cfg)
    out = tmp_path / "eval"
    assert summary["primary_chain"] == "centre" and summary["chains"]["centre"]["steps"] == "centre → l2"
    assert json.loads((out / "chains" / "centre" / "metrics.json").read_text())["uAP"] == summary["uAP"]
    assert "| centre |" in (out / "ablation.md").read_text()

    # descriptors.h5 holds the primary chain's output: the extracted descriptors minus the training mean, L2-normalised
    query_ids, queries = read_descriptors(out / "descriptors" / "thumbnail" / "query.h5")
    _, training = read_descriptors(out / "descriptors" / "thumbnail" / "training.h5")
    submission = read_descriptor_submission(out / "descriptors.h5")
    centred = queries - training.mean(axis=0)
    assert list(submission.query_ids) == list(query_ids)
    np.testing.assert_allclose(submission.query, centred / np.linalg.norm(centred, axis=1, keepdims=True), atol=1e-5)


def test_verifier_scores_pairs(project):
    from isc_research.match.verifiers import check_verifier

    cfg = composed(project, "verifier=histogram")
    verifier = instantiate(cfg.verifier)  # as isc-match builds it, then checks the convention
    check_verifier(verifier)
    assert verifier.name == "histogram"

    rng = np.random.default_rng(0)
    reddish = rng.integers(0, 256, (80, 100, 3), dtype=np.uint8)
    reddish[..., 0] = np.maximum(reddish[..., 0], 200)
    bluish = reddish[..., ::-1].copy()  # the same picture with red and blue swapped
    photo = Image.fromarray(reddish)
    scores = verifier.score_pairs(
        [photo, photo, photo], [photo, photo.transpose(Image.FLIP_LEFT_RIGHT), Image.fromarray(bluish)]
    )
    assert scores.shape == (3,)
    assert scores[0] == pytest.approx(1.0) and scores[1] == pytest.approx(1.0, abs=0.02)  # colours kept by a flip
    assert scores[2] < 0.2


# docs/architecture.md: every module path it names exists, every dotted name (`isc_research.trainer.build_trainer`)
# imports,
# and its tables list every package and module under isc_research/ (a renamed or moved name fails here).
ARCHITECTURE = DOC.parent / "architecture.md"
ROOT = DOC.parents[1]


def resolve(dotted: str) -> object:
    """The object a dotted name names: the longest importable module prefix, then attributes."""
    import importlib

    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            target = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attribute in parts[cut:]:
            target = getattr(target, attribute)
        return target
    raise ModuleNotFoundError(dotted)


def test_verifier_runs_in_isc_match(project, data_dir, tmp_path, one_torch_thread):
    """The page's isc-match command on the tiny mini-DISC, with an untrained checkpoint in isc-train's layout: the
    verifier's score of each pair in candidates.csv is the histogram intersection of the two images."""
    import csv

    from isc_research.data.disc import load_disc
    from isc_research.match.pipeline import match
    from my_isc.verifiers import HistogramVerifier
    from tests.test_evaluate import SMOKE_DATASET, save_checkpoint

    checkpoint = save_checkpoint(tmp_path / "model.ckpt")
    cfg = composed(
        project,
        "verifier=histogram",
        f"ckpt_path={checkpoint}",
        f"paths.data_dir={data_dir}",
        f"paths.output_dir={tmp_path / 'match'}",
        *SMOKE_DATASET,
    )
    match(cfg)
    with open(tmp_path / "match" / "candidates.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) > 0
    data = load_disc(cfg.dataset)
    paths = {r.id: r.path for r in data.queries + data.references}
    by_hand = HistogramVerifier(bins=8, side=64)
    for row in rows[:5]:
        images = [Image.open(paths[row["query_id"]]), Image.open(paths[row["reference_id"]])]
        assert float(row["verifier_score"]) == pytest.approx(by_hand.score_pairs(images[:1], images[1:])[0], abs=1e-6)


def test_architecture_names_exist():
    text = ARCHITECTURE.read_text(encoding="utf-8")
    for path in set(re.findall(r"\b(isc_research/[\w/.]+)", text)):
        assert (ROOT / path.rstrip(".")).exists(), f"docs/architecture.md names {path}, which does not exist"
    dotted = set(re.findall(r"\b(isc_research(?:\.[A-Za-z_]\w*)+)", text))
    assert {
        "isc_research.trainer.build_trainer",
        "isc_research.metric.evaluate",
        "isc_research.runs.recorded_run",
    } <= dotted
    for name in sorted(dotted):
        try:
            resolve(name)
        except (ImportError, AttributeError) as error:
            raise AssertionError(f"docs/architecture.md names {name}, which does not exist: {error}") from None


def test_architecture_lists_every_package_and_module():
    text = ARCHITECTURE.read_text(encoding="utf-8")
    listed = set(re.findall(r"^\| `(isc_research/[\w/.]+)` \|", text, re.M))
    packages = {f"isc_research/{p.name}/" for p in (ROOT / "isc_research").iterdir() if (p / "__init__.py").is_file()}
    modules = {f"isc_research/{p.name}" for p in (ROOT / "isc_research").glob("*.py") if p.name != "__init__.py"}
    assert listed == packages | modules
    assert "```mermaid" in text
