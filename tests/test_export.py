"""isc-export: TorchScript and ONNX files give the checkpoint model's descriptors (ONNX through onnxruntime), carry
their preprocessing, and follow it as isc-eval's transform does."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image

from tests.conftest import import_extra

import_extra("onnxruntime", "export")
import_extra("onnx", "export")

from isc_research.cli.export import main  # noqa: E402
from isc_research.checkpoints import load_checkpoint  # noqa: E402
from isc_research.export import load_onnx, load_torchscript, onnx_descriptors  # noqa: E402
from isc_research.extract import EvalTransform, ModelExtractor  # noqa: E402
from isc_research.model import DescriptorModel  # noqa: E402

TINY = {"backbone": "test_resnet", "embedding_dim": 32, "gem_p": 3.0}
VARIANTS = {
    "test_resnet": (TINY, 48),
    "test_resnet_bn_neck_grey_gem_eval_p_flips": (
        {
            **TINY,
            "neck": "linear_bn",
            "grayscale_input": True,
            "gem_eval_p": 4.0,
            "flip_average": "horizontal_vertical",
        },
        40,
    ),
    "mobilenetv3_small_050": ({"backbone": "mobilenetv3_small_050", "embedding_dim": 64, "gem_p": 3.0}, 64),
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def save_checkpoint(path: Path, model_args: dict, eval_size: int) -> Path:
    torch.manual_seed(0)
    model = DescriptorModel(**model_args)
    if isinstance(model.projection, torch.nn.Sequential):  # a trained BatchNorm: statistics that are not 0 / 1
        bn = model.projection[1]
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
    torch.save(
        {
            "hyper_parameters": {"model": model_args, "config": {"data": {"eval_size": eval_size}}},
            "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
        },
        path,
    )
    return path


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_exports_give_the_checkpoint_descriptors(variant, tmp_path, capsys):
    model_args, size = VARIANTS[variant]
    ckpt = save_checkpoint(tmp_path / "m.ckpt", model_args, size)
    assert main([str(ckpt), "--out", str(tmp_path / "out")]) == 0
    report = json.loads((tmp_path / "out" / "export.json").read_text())
    shown = capsys.readouterr().out  # the summary names every file, absolute
    assert all(str((tmp_path / "out" / f"m{suffix}").absolute()) in shown for suffix in (".torchscript.pt", ".onnx"))
    assert report["size"] == size and set(report["files"]) == {"torchscript", "onnx"}
    model, _ = load_checkpoint(ckpt)
    images = torch.randn(5, 3, size, size, generator=torch.Generator().manual_seed(7))  # not the traced batch size
    with torch.no_grad():
        expected = model(images).double()
    script, script_meta = load_torchscript(tmp_path / "out" / "m.torchscript.pt")
    session, onnx_meta = load_onnx(tmp_path / "out" / "m.onnx")
    with torch.no_grad():
        got_script = script(images).double()
    got_onnx = torch.from_numpy(onnx_descriptors(session, images)).double()
    assert got_script.shape == got_onnx.shape == (5, model_args["embedding_dim"])
    assert (got_script - expected).abs().max() < 1e-5
    assert (got_onnx - expected).abs().max() < 1e-5
    assert torch.allclose(got_onnx.norm(dim=1), torch.ones(5, dtype=torch.float64), atol=1e-5)
    for meta in (
        script_meta,
        onnx_meta,
        json.loads((tmp_path / "out" / "m.onnx.json").read_text()),
        json.loads((tmp_path / "out" / "m.torchscript.pt.json").read_text()),
    ):
        assert meta["input"]["shape"] == ["batch", 3, size, size]
        assert meta["input"]["mean"] == [0.485, 0.456, 0.406] and meta["input"]["std"] == [0.229, 0.224, 0.225]
        assert meta["output"]["shape"] == ["batch", model_args["embedding_dim"]] and meta["output"]["l2_normalised"]


def test_the_recorded_preprocessing_reproduces_isc_eval_descriptors(tmp_path):
    """Preprocessing a photo as the metadata says (float64 numpy) and running the ONNX file gives isc-eval's
    descriptor of that photo (EvalTransform + ModelExtractor)."""
    ckpt = save_checkpoint(tmp_path / "m.ckpt", TINY, 48)
    assert main([str(ckpt), "--out", str(tmp_path), "--format", "onnx"]) == 0
    session, meta = load_onnx(tmp_path / "m.onnx")
    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.integers(0, 256, (70, 90, 3), dtype=np.uint8))
    side = meta["input"]["shape"][2]
    resized = np.asarray(TF.resize(photo, [side, side], antialias=True), dtype=np.float64)
    x = (resized / 255 - np.array(meta["input"]["mean"])) / np.array(meta["input"]["std"])
    got = onnx_descriptors(session, x.transpose(2, 0, 1)[None].astype(np.float32))
    model, _ = load_checkpoint(ckpt)
    extractor = ModelExtractor(model, EvalTransform(48))
    expected = extractor.embed([[extractor.transform(photo)[0]]])
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_the_files_carry_the_metadata_under_the_documented_key(tmp_path):
    """A deployment reads the preprocessing without isc: onnx's metadata_props and TorchScript's extra file
    `isc_preprocessing` (README, isc-export) hold the same JSON as the sidecar."""
    import onnx

    ckpt = save_checkpoint(tmp_path / "m.ckpt", TINY, 48)
    assert main([str(ckpt), "--out", str(tmp_path), "--format", "onnx", "torchscript"]) == 0
    sidecar = json.loads((tmp_path / "m.onnx.json").read_text())
    props = {p.key: p.value for p in onnx.load(str(tmp_path / "m.onnx")).metadata_props}
    assert json.loads(props["isc_preprocessing"]) == sidecar
    with zipfile.ZipFile(tmp_path / "m.torchscript.pt") as archive:
        extra = [n for n in archive.namelist() if n.endswith("/extra/isc_preprocessing.json")]
        assert len(extra) == 1 and json.loads(archive.read(extra[0])) == sidecar


def test_refuses_to_overwrite_and_names_bad_input(tmp_path, capsys):
    ckpt = save_checkpoint(tmp_path / "m.ckpt", TINY, 48)
    assert main([str(ckpt), "--out", str(tmp_path / "o"), "--format", "torchscript"]) == 0
    before = (tmp_path / "o" / "m.torchscript.pt").read_bytes()
    capsys.readouterr()
    assert main([str(ckpt), "--out", str(tmp_path / "o"), "--format", "torchscript"]) == 2
    assert "already exist" in capsys.readouterr().err and (tmp_path / "o" / "m.torchscript.pt").read_bytes() == before
    assert (
        main(
            [
                str(ckpt),
                "--out",
                str(tmp_path / "o"),
                "--format",
                "torchscript",
                "--overwrite",
                "--name",
                "x",
                "--size",
                "32",
            ]
        )
        == 0
    )
    assert json.loads((tmp_path / "o" / "export.json").read_text())["size"] == 32
    assert main([str(tmp_path / "missing.ckpt"), "--out", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err
    torch.save(
        {
            "hyper_parameters": {"model": TINY, "config": {}},
            "state_dict": {f"model.{k}": v for k, v in DescriptorModel(**TINY).state_dict().items()},
        },
        tmp_path / "nosize.ckpt",
    )
    assert main([str(tmp_path / "nosize.ckpt"), "--out", str(tmp_path / "o2")]) == 2
    assert "--size" in capsys.readouterr().err
