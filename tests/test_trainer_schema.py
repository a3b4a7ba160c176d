"""One trainer schema, and a recipe on fewer GPUs (issue 15): every experiment composes with the same trainer
keys, so plain overrides move it to one GPU; `trainer.total_batch` keeps the recipe's images per optimizer step
by gradient accumulation; `data.num_workers: auto` sizes the DataLoader to the machine."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from isc_research.recipes import experiment_names, load_table
from isc_research.scaling import MAX_WORKERS, accumulation, data_workers, fit_to_hardware
from tests.conftest import compose_config

ONE_GPU = [
    "trainer.devices=1",
    "trainer.strategy=auto",
    "trainer.sync_batchnorm=false",
    "trainer.num_nodes=1",
    "trainer.limit_train_batches=20",
    "trainer.max_steps=20",
    "trainer.accumulate_grad_batches=1",
    "trainer.benchmark=true",
    "trainer.total_batch=null",
]
DEFAULT_KEYS = set(compose_config("train", []).trainer)


@pytest.mark.parametrize("name", experiment_names())
def test_every_experiment_takes_the_one_gpu_overrides_without_plus(name):
    cfg = compose_config("train", [f"experiment={name}", *ONE_GPU])  # a missing key would fail to compose
    assert set(cfg.trainer) - {"callbacks"} == DEFAULT_KEYS  # the same schema, nothing extra
    assert (cfg.trainer.devices, cfg.trainer.strategy, cfg.trainer.num_nodes) == (1, "auto", 1)


@pytest.mark.parametrize("option", ["cpu", "gpu", "ddp", "ddp_sim", "multi_node"])
def test_every_trainer_option_has_the_same_keys(option):
    assert set(compose_config("train", [f"trainer={option}"]).trainer) - {"callbacks"} == DEFAULT_KEYS


@pytest.mark.parametrize("name", experiment_names())
def test_the_total_batch_is_the_recipes_and_holds_on_its_own_hardware(name):
    cfg = compose_config("train", [f"experiment={name}"])
    total = cfg.trainer.total_batch
    rows = [row for row in load_table(name) if row.key == "total_batch" and row.verdict == "match"]
    assert total == (rows[0].source if rows else None)  # the source table's value (null where it states none)
    if total is not None:  # on the recipe's own GPUs: no accumulation
        assert accumulation(total, cfg.data.batch_size, cfg.trainer.devices, cfg.trainer.num_nodes) == 1


@pytest.mark.parametrize(
    "name,devices,nodes,steps",
    [
        ("lyakaap_stage1", 1, 1, 4),  # 128 = 32 × 1 × 4: the README's worked example
        ("lyakaap_stage1", 2, 1, 2),
        ("lyakaap_stage2", 1, 1, 8),  # 128 = 16 × 8
        ("lyakaap_stage4", 1, 1, 16),  # 16 queries at 1 per GPU
        ("sscd_disc_advanced", 8, 1, 4),  # one node of the four: 4096 = 128 × 8 × 4
        ("sscd_disc_advanced", 1, 1, 32),
        ("separate_retriever", 1, 1, 8),  # 56 = 7 × 8
        ("visionforce_desc", 1, 1, 4),  # 32 classes = 8 × 4
    ],
)
def test_fewer_gpus_accumulate_to_the_recipes_total_batch(name, devices, nodes, steps):
    cfg = compose_config(
        "train", [f"experiment={name}", f"trainer.devices={devices}", f"trainer.num_nodes={nodes}", "required={}"]
    )
    fit_to_hardware(cfg)
    assert cfg.trainer.accumulate_grad_batches == steps
    assert cfg.data.batch_size * devices * nodes * steps == cfg.trainer.total_batch


def test_total_batch_errors_explain_the_arithmetic():
    with pytest.raises(ValueError, match=r"total_batch=128 is not a multiple of .* 24 × 1 × 1 = 24.*divisor of 128"):
        accumulation(128, 24, 1, 1)
    with pytest.raises(ValueError, match=r"not a multiple"):  # more per step than the total: cannot shrink it
        accumulation(16, 32, 1, 1)
    with pytest.raises(
        ValueError,
        match=r"accumulate_grad_batches=2 contradicts trainer.total_batch=128 \(which "
        r"needs 4\)",
    ):
        accumulation(128, 32, 1, 1, accumulate=2)
    with pytest.raises(ValueError, match=r"trainer.devices='auto'.*needs a number of devices"):
        accumulation(128, 32, "auto", 1)
    assert accumulation(None, 32, "auto", 1, accumulate=3) == 3  # no total batch: as given
    assert accumulation(128, 32, [0, 1], 1) == 2  # a list of device ids counts its devices


def test_data_workers_auto_is_one_on_the_cpu_and_the_cores_on_gpus(monkeypatch):
    assert data_workers(3, "gpu", 1) == 3  # a number is kept
    assert data_workers("auto", "cpu", 1) == 1  # the CPU default run is unchanged
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(16)))
    assert data_workers("auto", "gpu", 1) == 15  # one H200 node of 16 cores: 15 workers + the training process
    assert data_workers("auto", "gpu", 4) == 3  # 4 processes share the 16 cores
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(96)))
    assert data_workers("auto", "cuda", 1) == MAX_WORKERS
    cpu = compose_config("train", ["trainer=cpu"])
    fit_to_hardware(cpu)
    assert cpu.data.num_workers == 1 and cpu.trainer.accumulate_grad_batches == 1


def test_the_trainer_gets_the_accumulation(smoke_cfg, tmp_path):
    from isc_research.trainer import build_trainer

    cfg = smoke_cfg("trainer.total_batch=32")  # smoke: 8 images per step on 1 process
    fit_to_hardware(cfg)
    trainer = build_trainer(cfg, tmp_path)
    assert trainer.accumulate_grad_batches == 4
    assert OmegaConf.select(cfg, "trainer.total_batch") == 32  # kept in the config (config.yaml records both)
