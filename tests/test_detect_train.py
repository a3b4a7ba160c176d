"""isc-train-detector: a few steps on a tiny mini-DISC write a checkpoint that OverlayDetector loads and that
returns valid boxes through the query-crop calling convention; config and errors."""

from __future__ import annotations

import functools
import json

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image

from isc_research.detect import OverlayDetector, build_detector, read_overlay_boxes
from isc_research.detect.synthetic import SyntheticOverlays
from isc_research.data.disc import resolve_root
from isc_research.data.records import ImageRecord
from tests.conftest import compose_config

from tests.test_evaluate import SMOKE_DATASET  # the session's smoke mini-DISC (16 queries)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def detector_overrides(data_dir, out, *overrides) -> list[str]:
    return [
        f"paths.data_dir={data_dir}",
        f"paths.output_dir={out}",
        *SMOKE_DATASET,
        "data.samples_per_epoch=4",
        "data.num_workers=0",
        "data.max_side=96",
        "data.val_batch_size=8",
        "detector.min_size=64",
        "detector.max_size=128",
        "trainer.max_epochs=1",
        "trainer.enable_progress_bar=false",
        "trainer.log_every_n_steps=1",
        "torch_threads=1",
        *overrides,
    ]


def detector_cfg(data_dir, out, *overrides):
    cfg = compose_config(
        "train_detector", detector_overrides(data_dir, out, "data.batch_size=2", "trainer.accelerator=cpu", *overrides)
    )
    OmegaConf.resolve(cfg)
    return cfg


@pytest.mark.slow
def test_smoke_training_writes_a_checkpoint_that_detects(data_dir, tmp_path):
    from isc_research.detect.train import train_detector

    # box_score_thresh 0: the checkpoint's model keeps every box, so that detect() has boxes to return
    metrics = train_detector(detector_cfg(data_dir, tmp_path / "run", "detector.box_score_thresh=0.0"))
    assert metrics["train/steps"] == 2
    assert 0.0 <= metrics["val/box_recall"] <= 1.0
    boxes = read_overlay_boxes(resolve_root(detector_cfg(data_dir, tmp_path / "x").dataset) / "query_edits.csv")
    n_boxes = sum(b is not None for b in boxes.values())
    assert n_boxes >= 1 and (metrics["val/n_boxes"], metrics["val/n_without_box"]) == (n_boxes, 16 - n_boxes)
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["checkpoint"] == metrics["checkpoint"]

    cfg = compose_config(
        "eval",
        [
            "+query_crops=detector",
            f"query_crops.ckpt_path={metrics['checkpoint']}",
            "query_crops.min_confidence=0.0",
            "query_crops.device=cpu",
            "query_crops.max_boxes=3",
        ],
    )
    detector = instantiate(cfg.query_crops)
    assert isinstance(detector, OverlayDetector) and detector.name.startswith("detector:")
    image = Image.new("RGB", (150, 90), (20, 120, 200))
    image.paste(Image.new("RGB", (60, 40), (250, 250, 0)), (30, 20))
    found = detector.detect(image)
    assert len(found) == 3  # max_boxes of the model's (up to 10) boxes
    confidences = [c for _, c in found]
    assert confidences == sorted(confidences, reverse=True) and len(set(confidences)) == 3
    for (x0, y0, x1, y1), c in found:
        assert all(isinstance(v, int) for v in (x0, y0, x1, y1))
        assert 0 <= x0 < x1 <= 150 and 0 <= y0 < y1 <= 90 and 0.0 <= c <= 1.0
    assert detector.crops(image) == [b for b, c in found]  # min_confidence 0: every box is a crop
    detector.min_confidence = confidences[2]  # crops keep the boxes strictly above it (the sources' >): the first two
    assert detector.crops(image) == [found[0][0], found[1][0]]


def test_checkpoint_round_trip_gives_the_same_detections(tmp_path):
    arguments = {
        "arch": "fasterrcnn_mobilenet_v3_small_fpn",
        "weights": None,
        "weights_backbone": None,
        "min_size": 64,
        "max_size": 128,
        "box_score_thresh": 0.0,
        "box_detections_per_img": 4,
        "representation_size": 32,
    }
    torch.manual_seed(0)
    model = build_detector(**arguments)
    path = tmp_path / "d.ckpt"
    torch.save(
        {
            "hyper_parameters": {"model": arguments},
            "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
        },
        path,
    )
    image = Image.effect_noise((120, 80), 60).convert("RGB")
    direct = OverlayDetector(model, min_confidence=0.0, max_boxes=4, device="cpu").detect(image)
    loaded = OverlayDetector.from_checkpoint(path, min_confidence=0.0, device="cpu", max_boxes=4).detect(image)
    assert loaded == direct


def test_from_checkpoint_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="isc-train-detector writes"):
        OverlayDetector.from_checkpoint(tmp_path / "none.ckpt")
    torch.save({"hyper_parameters": {"model": {"backbone": "x"}}, "state_dict": {}}, tmp_path / "desc.ckpt")
    with pytest.raises(ValueError, match="not an isc-train-detector checkpoint"):
        OverlayDetector.from_checkpoint(tmp_path / "desc.ckpt")


def test_build_detector_rejects_unknown_arch_and_builds_torchvision_factories():
    with pytest.raises(ValueError, match="detector.arch='yolov5x' is unknown"):
        build_detector("yolov5x")
    model = build_detector("ssdlite320_mobilenet_v3_large")
    assert type(model).__name__ == "SSD"


def test_synthetic_dataset_items_and_errors(tmp_path):
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"T{i:06d}.jpg")
        Image.effect_noise((80, 60), 40 + 10 * i).convert("RGB").save(paths[-1])
    records = [ImageRecord(p.stem, "training", p) for p in paths]
    dataset = SyntheticOverlays(records, 6, p_overlay=1.0, max_side=96)
    assert len(dataset) == 6
    torch.manual_seed(0)
    image, target = dataset[0]
    assert image.dtype == torch.float32 and image.shape[0] == 3 and 0 <= image.min() and image.max() <= 1
    assert target["boxes"].shape == (1, 4) and target["labels"].tolist() == [1]
    x0, y0, x1, y1 = target["boxes"][0].tolist()
    assert 0 <= x0 < x1 <= image.shape[2] and 0 <= y0 < y1 <= image.shape[1]
    _, negative = SyntheticOverlays(records, 1, p_overlay=0.0, max_side=96)[0]
    assert negative["boxes"].shape == (0, 4)
    with pytest.raises(ValueError, match="training split is empty"):
        SyntheticOverlays([], 4)
    with pytest.raises(ValueError, match="p_overlay must be in"):
        SyntheticOverlays(records, 4, p_overlay=1.5)


def test_init_from_loads_the_weights_of_an_earlier_run(tmp_path):
    from isc_research.detect.model import DetectorModule
    from isc_research.detect.train import initialise_detector

    arguments = {
        "arch": "fasterrcnn_mobilenet_v3_small_fpn",
        "min_size": 64,
        "max_size": 128,
        "representation_size": 32,
    }
    optimizer = functools.partial(torch.optim.AdamW, lr=1e-3)  # as the `optimizer` group instantiates it
    torch.manual_seed(0)
    earlier = DetectorModule(model=arguments, optimizer=optimizer)
    torch.save({"state_dict": earlier.state_dict()}, tmp_path / "e.ckpt")
    torch.manual_seed(1)
    module = DetectorModule(model=arguments, optimizer=optimizer)
    initialise_detector(module, tmp_path / "e.ckpt")
    for (name, a), b in zip(earlier.state_dict().items(), module.state_dict().values()):
        assert torch.equal(a, b), name
    with pytest.raises(FileNotFoundError, match="init_from="):
        initialise_detector(module, tmp_path / "none.ckpt")
    other = DetectorModule(model={**arguments, "representation_size": 16}, optimizer=optimizer)
    torch.save({"state_dict": other.state_dict()}, tmp_path / "o.ckpt")
    with pytest.raises(ValueError, match="does not fit detector"):
        initialise_detector(module, tmp_path / "o.ckpt")
