"""Every recipe experiment for a few steps on one device, in its own precision: does it run, how fast, how much
memory, µAP before and after (issue 15). One row per experiment; exits non-zero when any experiment failed.

    python scripts/bench/gpu_recipes.py [--device cuda|cpu] [--steps 20] [--only a,b] [--timeout 150]
        [--out bench-gpu/recipes] [-- extra isc-train overrides]

Sized for one H200 with 16 cores in about 6 minutes (22 experiments; UNMEASURED — no GPU in the session that
wrote it): each experiment runs in its own process with the one-GPU overrides of the README ("Run a recipe on
your GPUs"), random init, the default mini-DISC with a 100-query / 200-reference validation subset, scored
before training and after `--steps` steps, `data.num_workers=auto`, and `trainer.total_batch=null` (the
per-process batch of the recipe, no accumulation: steps/s is the speed of one recipe batch). The chains the
recipes need are run for real: lyakaap stages 2–4 start from the previous stage's checkpoint of this run, and
VisionForce / D²LV from the ResNet-50 backbone exported from this run's sscd_disc_advanced (random init, as
everything here). steps/s counts optimizer steps after the first (cuDNN autotuning, compilation).

On the CPU, at tiny size (checks the script itself, not a measurement):
    python scripts/bench/gpu_recipes.py --device cpu --steps 2 --only lyakaap_stage1 -- debug=recipe_smoke
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# The order runs every provider before the experiments that need its output (see NEEDS).
ORDER_FIRST = [
    "lyakaap_stage1",
    "lyakaap_stage2",
    "lyakaap_stage3",
    "lyakaap_stage4",
    "sscd_disc_advanced",
    "separate_retriever",
]
NEEDS = {  # experiment: (required key, provider, how the provider's run gives the value)
    "lyakaap_stage2": ("init_from", "lyakaap_stage1", "checkpoint"),
    "lyakaap_stage3": ("init_from", "lyakaap_stage2", "checkpoint"),
    "lyakaap_stage4": ("init_from", "lyakaap_stage3", "checkpoint"),
    "visionforce_desc": ("backbone.weights_file", "sscd_disc_advanced", "backbone"),
    "d2lv_desc": ("backbone.weights_file", "sscd_disc_advanced", "backbone"),
    "separate_retriever_stage2": ("init_from", "separate_retriever", "checkpoint"),
}


def one_device_overrides(steps: int, device: str) -> list[str]:
    accelerator = "gpu" if device == "cuda" else "cpu"
    return [
        f"trainer.accelerator={accelerator}",
        "trainer.devices=1",
        "trainer.strategy=auto",
        "trainer.sync_batchnorm=false",
        "trainer.num_nodes=1",
        "trainer.total_batch=null",
        "trainer.accumulate_grad_batches=1",
        "trainer.max_epochs=1",
        f"trainer.max_steps={steps}",
        f"trainer.limit_train_batches={steps}",
        "trainer.check_val_every_n_epoch=1",
        "trainer.enable_progress_bar=false",
        "backbone.pretrained=false",
        "data.num_workers=auto",
        "dataset.validation.max_queries=100",
        "dataset.validation.max_references=200",
        "validate_before_training=true",
        "resume=false",
    ]


def child(name: str, overrides: list[str], row_path: Path) -> int:
    """Run one experiment in this process and write its row (JSON)."""
    import lightning as L
    import torch
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    import isc_research.train as isc_train
    from isc_research.config import config_dir

    class StepTimer(L.Callback):
        def __init__(self):
            self.times: list[float] = []

        def on_train_batch_end(self, trainer, *args) -> None:
            if trainer.strategy.root_device.type == "cuda":
                torch.cuda.synchronize()
            self.times.append(time.perf_counter())

    timer = StepTimer()
    build_trainer = isc_train.build_trainer
    isc_train.build_trainer = lambda cfg, out, extra=(): build_trainer(cfg, out, [*extra, timer])
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"experiment={name}", *overrides])
    OmegaConf.resolve(cfg)
    row: dict = {"experiment": name, "precision": str(cfg.trainer.precision), "status": "ok"}
    cuda = torch.cuda.is_available() and cfg.trainer.accelerator in ("gpu", "cuda")
    started = time.perf_counter()
    try:
        metrics = isc_train.train(cfg)
        row.update(init_uAP=metrics.get("init/uAP"), final_uAP=metrics.get("val/uAP"))
    except Exception as error:  # the row says what failed; the table goes on
        row.update(status=f"{type(error).__name__}: {' '.join(str(error).split())[:300]}")
    row["wall_s"] = round(time.perf_counter() - started, 1)
    if len(timer.times) >= 2:
        row["steps_per_s"] = round((len(timer.times) - 1) / (timer.times[-1] - timer.times[0]), 3)
    row["steps"] = len(timer.times)
    if cuda:
        row["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    row["data_workers"] = cfg.data.num_workers
    row_path.write_text(json.dumps(row))
    return 0 if row["status"] == "ok" else 1


def provided_value(kind: str, provider_dir: Path) -> str | None:
    checkpoint = provider_dir / "checkpoints" / "last.ckpt"
    if not checkpoint.is_file():
        return None
    if kind == "checkpoint":
        return str(checkpoint)
    from isc_research.cli.export_backbone import export_backbone

    target = provider_dir / "backbone.pth"
    export_backbone(checkpoint, target)
    return str(target)


def fmt(value, digits: int = 4) -> str:
    return "–" if value is None else (f"{value:.{digits}f}" if isinstance(value, float) else str(value))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--only", default="", help="comma-separated experiments (default: all)")
    parser.add_argument("--timeout", type=int, default=150, help="seconds per experiment before it is stopped")
    parser.add_argument("--out", type=Path, default=Path("bench-gpu/recipes"))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--row", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args.child, extra, args.row)

    sys.path.insert(0, str(ROOT))
    from isc_research.recipes import experiment_names

    names = experiment_names()
    if args.only:
        unknown = set(args.only.split(",")) - set(names)
        if unknown:
            parser.error(f"unknown experiments {sorted(unknown)}; known: {', '.join(names)}")
        names = [n for n in names if n in args.only.split(",")]
    names = sorted(names, key=lambda n: (ORDER_FIRST.index(n) if n in ORDER_FIRST else len(ORDER_FIRST), n))
    args.out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    rows, started = [], time.perf_counter()
    for name in names:
        run_dir = (args.out / name).absolute()
        overrides = [*one_device_overrides(args.steps, args.device), f"paths.output_dir={run_dir}", *extra]
        note = ""
        if name in NEEDS:
            key, provider, kind = NEEDS[name]
            value = provided_value(kind, (args.out / provider).absolute())
            if value is None:  # its provider did not run or failed: random init, said in the row
                overrides.append(f"required.{key}=null")
                note = f" ({key}: none, {provider} gave no checkpoint)"
            else:
                overrides.append(f"{key}={value}")
        row_path = run_dir / "row.json"
        row_path.parent.mkdir(parents=True, exist_ok=True)
        row_path.unlink(missing_ok=True)
        command = [sys.executable, __file__, "--child", name, "--row", str(row_path), "--", *overrides]
        try:
            done = subprocess.run(command, env=env, cwd=ROOT, timeout=args.timeout, capture_output=True, text=True)
            (run_dir / "log.txt").write_text(done.stdout + done.stderr)
            row = (
                json.loads(row_path.read_text())
                if row_path.is_file()
                else {"experiment": name, "status": f"exit {done.returncode}: {done.stderr.strip().splitlines()[-1:]}"}
            )
        except subprocess.TimeoutExpired:
            row = {"experiment": name, "status": f"timeout after {args.timeout} s"}
        row["status"] += note
        rows.append(row)
        print(
            f"{name}: {row['status']} {fmt(row.get('steps_per_s'), 2)} steps/s, µAP {fmt(row.get('init_uAP'))} → "
            f"{fmt(row.get('final_uAP'))}, peak {fmt(row.get('peak_gib'), 1)} GiB, {fmt(row.get('wall_s'), 0)} s",
            flush=True,
        )
    (args.out / "rows.json").write_text(json.dumps(rows, indent=2))
    print(f"\n{len(rows)} experiments in {time.perf_counter() - started:.0f} s ({args.device}, {args.steps} steps)\n")
    print("| experiment | precision | status | steps/s | init µAP | final µAP | peak GPU GiB |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['experiment']} | {r.get('precision', '–')} | {r['status']} | {fmt(r.get('steps_per_s'), 2)} | "
            f"{fmt(r.get('init_uAP'))} | {fmt(r.get('final_uAP'))} | {fmt(r.get('peak_gib'), 1)} |"
        )
    return 0 if all(r["status"] == "ok" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
