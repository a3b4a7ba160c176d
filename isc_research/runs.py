"""Run folders: a status file in each, and the rule for reusing a folder.

Every isc-train / isc-eval / isc-match / isc-train-detector / isc-train-verifier run records its state in
``<folder>/run_status.json``: ``running`` (written at the start; a run killed with SIGKILL keeps it),
``finished``, ``failed`` (with the error) or ``interrupted`` (SIGINT / SIGTERM), with the command line, the
times and the resolved config (`flat_config`; `result_settings` is the part that decides the result).

`claim_folder` decides whether a command may write into a folder, before any work:
  - an empty folder (or one holding only Hydra's ``.hydra/`` and log file): yes;
  - an unfinished run (running / failed / interrupted) with the same result settings: yes, it resumes;
  - an unfinished run with other result settings that left no checkpoint (nothing to lose): its files are
    removed, with a warning naming the differences;
  - a finished run, or an unfinished run with other result settings and a checkpoint: no; the error says how to
    replace it (``overwrite=true``) or to choose another folder (``paths.output_dir=...``);
  - ``overwrite=true``: the earlier run's files are removed first (the folder must hold an isc run, never a
    folder of other files);
  - a folder with files that are not an isc run: no, even with overwrite.

`result_settings` drops the keys that may differ between a run and its continuation without changing what it
computes (`FREE_KEYS`): where files go (paths, loggers, checkpoint folders, figures), how many epochs or steps
to train for (a finished schedule can be extended), data loading workers and threads, progress output, and the
switches of the command itself (ckpt_path, resume, overwrite). Everything else (model, loss, optimizer,
augmentation, data, seed, trainer precision and devices, ...) must match.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from isc_research.config import dotted_leaves

log = logging.getLogger(__name__)

__all__ = [
    "STATUS_FILE",
    "RunFolderError",
    "Stopped",
    "claim_folder",
    "differences",
    "flat_config",
    "read_status",
    "recorded_run",
    "result_settings",
    "write_status",
]

STATUS_FILE = "run_status.json"
STATES = ("running", "finished", "failed", "interrupted")
HYDRA_FILES = (".hydra", "*.log")  # written by Hydra into the run folder before the run starts
FREE_KEYS = (
    "paths.*",
    "logger.*",
    "hydra.*",
    "task_name",
    "ckpt_path",
    "resume",
    "overwrite",
    "torch_threads",
    "trainer.max_epochs",
    "trainer.max_steps",
    "trainer.enable_progress_bar",
    "trainer.log_every_n_steps",
    "trainer.enable_model_summary",
    "trainer.default_root_dir",
    "callbacks.*.dirpath",
    "callbacks.*.output_dir",
    "callbacks.retrieval_figures.*",
    "callbacks.lr_monitor.*",
    "data.num_workers",
    "data.eval_batch_size",
    "eval.num_workers",
    "eval.batch_size",
    "eval.descriptor_dir",
    "eval.device",
    "eval.report.*",
    "eval.search_device",
    "callbacks.*.search_device",  # the search is exact on every device (isc_research.search)
    "validate_before_training",
    "optimized_metric",
    "hparams_search.*",
    "resume_changes",
)


class RunFolderError(RuntimeError):
    """A folder that a command may not write into; the message says why and what to do."""


class Stopped(SystemExit):
    """The run was stopped by a signal: exit with `code` (128 + the signal number), recorded as interrupted."""

    def __init__(self, reason: str, code: int):
        super().__init__(code)
        self.reason = reason


def _rank() -> int:
    from lightning.pytorch.utilities import rank_zero_only

    return int(getattr(rank_zero_only, "rank", 0) or 0)


def flat_config(cfg: DictConfig | Mapping) -> dict[str, object]:
    """The resolved config as {dotted key: value} (what run_status.json records as `settings`)."""
    container = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    return dict(dotted_leaves(container))


def result_settings(cfg: DictConfig | Mapping, compare: tuple[str, ...] = ()) -> dict[str, object]:
    """The flattened, resolved config without the keys of FREE_KEYS (except those in `compare`, e.g. isc-eval's
    ckpt_path): what decides the result of the run."""
    return {
        k: v for k, v in flat_config(cfg).items() if k in compare or not any(fnmatch.fnmatch(k, p) for p in FREE_KEYS)
    }


def differences(before: Mapping, now: Mapping, limit: int = 6, compare: tuple[str, ...] = ()) -> list[str]:
    """'key: old → new' for the result settings that differ (keys only one side has are not compared: a key that
    a newer isc added keeps its default)."""
    a, b = result_settings(before, compare), result_settings(now, compare)
    diff = [f"{k}: {a[k]!r} → {b[k]!r}" for k in sorted(set(a) & set(b)) if a[k] != b[k]]
    return diff[:limit] + ([f"... {len(diff) - limit} more"] if len(diff) > limit else [])


def read_status(folder: str | os.PathLike) -> dict | None:
    path = Path(folder) / STATUS_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def write_status(folder: str | os.PathLike, state: str, cfg: DictConfig | Mapping | None = None, **details) -> None:
    """Record `state` (running / finished / failed / interrupted) in `folder`/run_status.json, atomically; rank 0
    only. The settings of the first record are kept in the later ones."""
    if state not in STATES:
        raise ValueError(f"run state must be one of {STATES}, got {state!r}")
    if _rank() != 0:
        return
    folder = Path(folder)
    record = {k: v for k, v in (read_status(folder) or {}).items() if k in ("tool", "started", "settings")}
    record.update(
        status=state,
        updated=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        pid=os.getpid(),
        command=sys.argv,
        **details,
    )
    if cfg is not None:
        record["settings"] = flat_config(cfg)
    record.setdefault("started", record["updated"])
    tmp = folder / f".{STATUS_FILE}.tmp"
    tmp.write_text(json.dumps(record, indent=2, default=str))
    os.replace(tmp, folder / STATUS_FILE)


def _is_hydra_file(path: Path) -> bool:
    return any(fnmatch.fnmatch(path.name, p) for p in HYDRA_FILES)


def _earlier_run(folder: Path, legacy_config: str | None, finished_marker: str) -> tuple[str, dict | None] | None:
    """(state, result settings or None) of the run a folder holds; None if it holds no files of a run."""
    status = read_status(folder)
    if status is not None:
        return str(status.get("status")), status.get("settings")
    config = folder / legacy_config if legacy_config else None
    settings = None
    if config is not None and config.is_file():  # a folder written before run_status.json existed
        settings = flat_config(OmegaConf.load(config))
    if (folder / finished_marker).is_file():
        return "finished", settings
    return ("unfinished", settings) if settings is not None else None


def claim_folder(
    folder: str | os.PathLike,
    cfg: DictConfig,
    tool: str,
    *,
    legacy_config: str | None = "config.yaml",
    finished_marker: str = "metrics.json",
    keep: tuple[str, ...] = (),
    compare: tuple[str, ...] = (),
) -> None:
    """Raise RunFolderError unless `tool` may write its run into `folder` (see the module's rules); with
    cfg.overwrite, remove the earlier run's files first (except Hydra's files and the names in `keep`, e.g. a
    cache that checks itself). `compare`: keys of FREE_KEYS that decide this tool's result (isc-eval's
    ckpt_path). Rank 0 decides; the other ranks of a DDP run write into the folder it claimed."""
    folder = Path(folder)
    if _rank() != 0 or not folder.is_dir():
        return
    contents = [p for p in folder.iterdir() if not _is_hydra_file(p)]
    if not contents:
        return
    earlier = _earlier_run(folder, legacy_config, finished_marker)
    where = f"paths.output_dir={folder}"
    if earlier is None:
        if all(p.name in keep for p in contents):
            return
        names = ", ".join(sorted(p.name for p in contents)[:5])
        raise RunFolderError(
            f"{where} holds files that are not an {tool} run ({names}); choose a new or empty "
            "folder (paths.output_dir=...)"
        )
    state, settings = earlier
    if cfg.get("overwrite"):
        _remove(folder, contents, keep)
        log.warning("overwrite=true: removed the %s run in %s", state, folder)
        return
    how = "pass overwrite=true to replace it, or choose another folder (paths.output_dir=...)"
    if state == "finished":
        last = folder / "checkpoints" / "last.ckpt"
        longer = (
            (
                f"; to train it longer, continue from its checkpoint in a new folder: ckpt_path={last} "
                "paths.output_dir=<new folder> trainer.max_epochs=<more>"
            )
            if last.is_file()
            else ""
        )
        raise RunFolderError(f"{where} holds a finished {tool} run; {how}{longer}")
    diff = differences(settings, cfg, compare=compare) if settings is not None else []
    if diff and not any(folder.rglob("*.ckpt")):  # it stopped before its first checkpoint: nothing to lose
        _remove(folder, contents, keep)
        log.warning(
            "%s held a %s run of other settings (%s) that left no checkpoint: replaced by this run",
            folder,
            state,
            "; ".join(diff[:3]),
        )
        return
    if diff:
        raise RunFolderError(
            f"{where} holds an unfinished run of another configuration ({'; '.join(diff)}), which "
            f"this command would mix with its own; {how}"
        )
    log.info("%s holds an unfinished run (%s) of the same configuration: this run continues in it", folder, state)


def _raise_stopped(signum, frame) -> None:
    raise Stopped("SIGTERM", 128 + signum)


def _remove(folder: Path, contents: list[Path], keep: tuple[str, ...]) -> None:
    for p in contents:
        if p.name not in keep:
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()


@contextmanager
def recorded_run(folder: str | os.PathLike, cfg: DictConfig, *, sigterm: bool = False) -> Iterator[None]:
    """Record the run's state in `folder`: running, then finished, failed (with the error) or interrupted.
    `sigterm`: SIGTERM stops the run at once with exit status 143, recorded as interrupted (for tools whose
    files are safe to stop anywhere; isc-train lets Lightning stop after the current step instead)."""
    folder = Path(folder)
    write_status(folder, "running", cfg)
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_stopped) if sigterm and main_thread else None
    try:
        yield
    except (KeyboardInterrupt, SystemExit) as stop:
        write_status(folder, "interrupted", reason=getattr(stop, "reason", type(stop).__name__))
        raise
    except BaseException as error:
        write_status(folder, "failed", error=f"{type(error).__name__}: {' '.join(str(error).split())[:1000]}")
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    write_status(folder, "finished")


def start_run_folder(cfg: DictConfig, output_dir: Path, tool: str = "isc-train") -> None:
    """Before any work: the output folder must be writable and free for this run (isc_research.runs.claim_folder: an
    unfinished run of the same settings resumes; a finished or other run stops, unless overwrite=true)."""
    check_writable(output_dir)
    claim_folder(output_dir, cfg, tool)


def check_writable(folder: Path) -> None:
    """Create `folder` and a file in it, or raise an error that names it and says what to do."""
    import tempfile

    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as error:
        raise OSError(
            f"cannot write to the output folder {folder} ({error.strerror or error}): is it read-only, "
            "full, or a file? Choose a writable folder with paths.output_dir=... (or paths.log_dir=...)"
        ) from None


def claim_eval_folder(cfg: DictConfig, output_dir: Path, tool: str = "isc-eval") -> None:
    """claim_folder for isc-eval and isc-match: the descriptor cache is kept (it checks itself), and a run of
    another ckpt_path counts as another run."""
    claim_folder(output_dir, cfg, tool, legacy_config=None, keep=("descriptors",), compare=("ckpt_path",))
