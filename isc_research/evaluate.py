"""isc-eval: descriptors (streamed to HDF5) → post-processing chains → candidates → metrics and files.

One run extracts the query, reference (and, when a chain needs them, training) descriptors once per
checkpoint or baseline, then scores every chain of the eval grid on them. Files in paths.output_dir:
metrics.json, predictions.csv, descriptors.h5 and pr_curve.png (the primary chain = the first one),
pr_curves_chains.png (the other chains, small multiples),
ablation.csv / ablation.md, report.html, per_edit.md (report.html's per-edit table: the model next to the hashes
of dataset.compare_hashes), chains/<name>/{predictions.csv, metrics.json}, descriptors/ (the HDF5 caches).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from isc_research.config import check_required
from isc_research.data.disc import DiscData, load_disc
from isc_research.extract import build_extractors, checkpoint_paths, extract_to_hdf5, read_descriptors
from isc_research.finite import check_finite
from isc_research.formats import DescriptorSubmission, write_descriptor_submission, write_predictions
from isc_research.metric import Predictions, evaluate, precision_recall
from isc_research.postprocess import Chain, build_chains, select_models
from isc_research.search import candidates as search_candidates
from isc_research.summary import similarity

log = logging.getLogger(__name__)

DESCRIPTOR_TRACK_MAX_DIM = 256


@dataclass
class Descriptors:
    """Per extractor: (ids, vectors) of queries, references and (when needed) training images."""

    query: list[tuple[np.ndarray, np.ndarray]]
    reference: list[tuple[np.ndarray, np.ndarray]]
    training: list[tuple[np.ndarray, np.ndarray]] | None


def extract_all(cfg: DictConfig, extractors: list, data: DiscData, need_training: bool, directory: Path) -> Descriptors:
    ev = cfg.eval
    common = dict(
        chunk_size=int(ev.chunk_size),
        batch_size=int(ev.batch_size),
        num_workers=int(ev.num_workers),
        skip_bad_images=bool(ev.skip_bad_images),
        draft_size=ev.draft_size,
    )
    splits = [("query", data.queries), ("reference", data.references)]
    if need_training:
        if not data.training:
            raise ValueError(
                "a chain of the eval grid needs training-set descriptors but the dataset has no training images"
            )
        splits.append(("training", data.training))
    out: dict[str, list] = {name: [] for name, _ in splits}
    for extractor in extractors:
        for split, records in splits:
            path = extract_to_hdf5(
                extractor,
                records,
                directory / extractor.name / f"{split}.h5",
                desc=f"{extractor.name} {split}",
                **common,
            )
            ids, vectors = read_descriptors(path)
            check_finite(vectors, f"{extractor.name} {split}")  # a precision error, before any search
            out[split].append((ids, vectors))
    for split in out:
        first = out[split][0][0]
        for i, (ids, _) in enumerate(out[split][1:], start=1):
            if len(ids) != len(first) or (ids != first).any():
                raise ValueError(
                    f"{split}: extractor {i} has descriptors for other images than extractor 0 "
                    "(unreadable images skipped differently?); cannot concatenate them"
                )
    return Descriptors(out["query"], out["reference"], out.get("training"))


def candidates(
    cfg: DictConfig, chain: Chain, q: np.ndarray, r: np.ndarray, qids, rids, n_queries: int | None = None
) -> Predictions:
    """`n_queries`: the size of the query set, skipped queries included (the global rule keeps
    results_per_query × that many pairs, as the official scorer does with a submission holding every query)."""
    return search_candidates(
        cfg.eval.candidates,
        q,
        r,
        qids,
        rids,
        results_per_query=cfg.eval.results_per_query,
        n_queries=n_queries,
        k=cfg.eval.k,
        metric=chain.metric,
        device=cfg.eval.search_device,
        setting="eval.candidates",
    )


def skipped_images(data: DiscData, query_ids: np.ndarray, reference_ids: np.ndarray) -> dict[str, list[str]]:
    """Queries and references without a descriptor (unreadable, skipped with eval.skip_bad_images). They stay
    in the ground truth: a ground-truth pair of a skipped query or reference is a miss, as the official scorer
    counts it (it scores every pair of its ground truth), so skipping an image can never raise the µAP."""
    seen_q, seen_r = set(query_ids.tolist()), set(reference_ids.tolist())
    skipped = {
        "query": [r.id for r in data.queries if r.id not in seen_q],
        "reference": [r.id for r in data.references if r.id not in seen_r],
    }
    skipped_q, skipped_r = set(skipped["query"]), set(skipped["reference"])
    missed = sum(1 for q, r in data.ground_truth.matches.items() if q in skipped_q or r in skipped_r)
    if skipped["query"] or skipped["reference"]:
        log.warning(
            "%d queries and %d references were unreadable and skipped; their %d ground-truth pairs count as "
            "misses (as the official scorer counts them)",
            len(skipped["query"]),
            len(skipped["reference"]),
            missed,
        )
    return skipped


def _with_placeholders(
    q: np.ndarray, r: np.ndarray, qids: np.ndarray, skipped: list[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Query descriptors for a submission that the official scorer accepts (it needs one per ground-truth query):
    each skipped query gets a vector farther from every reference than any real query is (norm 100 × the largest
    real norm), so that its pairs rank last and never reach the global candidate list: a miss, as in isc-eval's
    own scoring."""
    if not skipped:
        return q, qids
    largest = max(float(np.linalg.norm(q, axis=1).max(initial=0)), float(np.linalg.norm(r, axis=1).max(initial=0)))
    far = np.full((len(skipped), q.shape[1]), 100 * (largest + 1) / np.sqrt(q.shape[1]), np.float32)
    return np.concatenate([q, far]), np.concatenate([qids.astype(str), np.array(skipped, dtype=str)])


def _link_or_copy(source: Path, target: Path) -> None:
    target.unlink(missing_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def evaluate_checkpoint(cfg: DictConfig) -> dict:
    """Run isc-eval as configured; returns the primary chain's metrics plus every chain's under "chains".
    The output folder must be new, or hold an unfinished isc-eval run of the same settings (it resumes); a
    finished or other run stops unless overwrite=true, which removes its files (not the descriptor cache, which
    checks itself), so that no earlier file is left beside the new metrics (isc_research.runs)."""
    from isc_research.runs import check_writable, claim_eval_folder, recorded_run

    check_required(cfg)  # e.g. dataset=disc21 without dataset.root: stop before any work
    output_dir = Path(cfg.paths.output_dir)
    claim_eval_folder(cfg, output_dir)
    check_writable(output_dir)
    with recorded_run(output_dir, cfg, sigterm=True):
        return _evaluate(cfg, output_dir)


def _evaluate(cfg: DictConfig, output_dir: Path) -> dict:
    if cfg.eval.write_submissions not in ("primary", "all", "none"):
        raise ValueError(f"eval.write_submissions must be primary, all or none; got {cfg.eval.write_submissions!r}")
    chains = build_chains(cfg.eval_grid.chains)  # config errors before any extraction
    from isc_research.scaling import configure_threads

    configure_threads(cfg.get("torch_threads"), int(cfg.eval.num_workers))
    extractors = build_extractors(cfg)
    data = load_disc(cfg.dataset)
    data, query_crop = replace_queries(cfg, data, output_dir)
    descriptor_dir = Path(cfg.eval.descriptor_dir) if cfg.eval.get("descriptor_dir") else output_dir / "descriptors"
    desc = extract_all(cfg, extractors, data, any(c.needs_training for c in chains), descriptor_dir)
    query_ids, reference_ids = desc.query[0][0], desc.reference[0][0]
    gt = data.ground_truth  # whole: a skipped query's pairs are misses (skipped_images)
    skipped = skipped_images(data, query_ids, reference_ids)

    known = {
        "known_query_ids": np.array([rec.id for rec in data.queries]),
        "known_reference_ids": np.array([rec.id for rec in data.references]),
    }
    rows, curves, results = [], [], {}
    for i, chain in enumerate(chains):
        started = time.perf_counter()
        training = None if desc.training is None else select_models(chain, [v for _, v in desc.training])
        chain.fit(training)
        q = chain.transform(select_models(chain, [v for _, v in desc.query]), "query")
        r = chain.transform(select_models(chain, [v for _, v in desc.reference]), "reference")
        predictions = candidates(cfg, chain, q, r, query_ids, reference_ids, len(data.queries))
        metrics = evaluate(gt, predictions).to_dict()
        # the threshold on the scale users see (isc-search, report.html): similarity; scores stay as searched
        metrics["similarity_at_p90"] = similarity(metrics["threshold_at_p90"], chain.metric)
        seconds = time.perf_counter() - started
        chain_dir = output_dir / "chains" / chain.name
        write_predictions(chain_dir / "predictions.csv", predictions, **known)  # ≤ 500,000 rows, the official limit
        (chain_dir / "metrics.json").write_text(json.dumps({"steps": chain.describe(), **metrics}, indent=2))
        if cfg.eval.write_submissions == "all" or (cfg.eval.write_submissions == "primary" and i == 0):
            _write_submission(
                chain,
                *_with_placeholders(q, r, query_ids, skipped["query"]),
                r,
                reference_ids,
                output_dir / "descriptors.h5" if i == 0 else chain_dir / "descriptors.h5",
                known,
            )
        if i == 0:
            _link_or_copy(chain_dir / "predictions.csv", output_dir / "predictions.csv")
        precision, recall, _ = precision_recall(gt, predictions) if len(predictions) else (np.zeros(0),) * 3
        curves.append((f"{chain.name} (µAP {metrics['uAP']:.3f})", precision, recall))
        rows.append(
            {
                "chain": chain.name,
                "steps": chain.describe(),
                "metric": chain.metric,
                "dims": q.shape[1],
                **metrics,
                "seconds": round(seconds, 2),
            }
        )
        results[chain.name] = {"steps": chain.describe(), "metric": chain.metric, "dims": int(q.shape[1]), **metrics}
        log.info("%s [%s]: µAP %.4f", chain.name, chain.describe(), metrics["uAP"])

    from isc_research.report import plot_pr_curve, plot_pr_grid, write_ablation_table

    write_ablation_table(rows, output_dir)
    plot_pr_curve(*curves[0], output_dir / "pr_curve.png", title=_title(cfg, extractors))  # the primary chain
    if len(curves) > 1:
        plot_pr_grid(curves, output_dir / "pr_curves_chains.png")
    summary = {
        **{k: v for k, v in results[chains[0].name].items() if k not in ("steps", "metric", "dims")},
        "primary_chain": chains[0].name,
        "chains": results,
        "skipped": {split: len(ids) for split, ids in skipped.items()},
    }
    if query_crop is not None:
        summary["query_crop"] = query_crop
    (output_dir / "metrics.json").write_text(json.dumps(summary, indent=2))
    if cfg.eval.report.enabled:  # report.html: reads the files above (isc_research/report_html.py)
        from isc_research.report_html import write_report

        write_report(output_dir, data, gt, cfg.eval.report, title=_title(cfg, extractors), hashes=_hashes(cfg, data))
    return summary


def _hashes(cfg: DictConfig, data: DiscData) -> dict[str, dict]:
    """The classical hashes of dataset.compare_hashes on the same queries (cached per build,
    isc_research.hash_comparison),
    for report.html's per-edit table; not the baseline being evaluated itself."""
    from isc_research.hash_comparison import hash_results

    names = [str(n) for n in cfg.dataset.get("compare_hashes") or () if str(n) != str(cfg.get("baseline"))]
    return {name: hash_results(data, name, Path(cfg.paths.data_dir) / "hash_baselines") for name in names}


def replace_queries(cfg: DictConfig, data: DiscData, output_dir: Path) -> tuple[DiscData, dict | None]:
    """VisionForce's query replacement (RECIPES §4) when eval.query_crop.detector_ckpt is set: confidently
    detected overlay crops replace their queries (listed in query_crops.csv); else `data` unchanged."""
    qc = cfg.eval.get("query_crop")
    if not qc or not qc.get("detector_ckpt"):
        return data, None
    from hydra.utils import instantiate

    from isc_research.detect.query_crop import replace_queries_by_crops

    queries, summary = replace_queries_by_crops(
        data.queries,
        instantiate(qc.detector),
        float(qc.min_confidence),
        output_dir / "query_crops.csv",
        skip_bad_images=bool(cfg.eval.skip_bad_images),
    )
    return dataclasses.replace(data, queries=queries), summary


def _title(cfg: DictConfig, extractors: list) -> str:
    if cfg.get("baseline"):
        return f"baseline {cfg.baseline}"
    return ", ".join(Path(p).name for p in checkpoint_paths(cfg))


def _write_submission(chain: Chain, q: np.ndarray, qids, r: np.ndarray, rids, path: Path, known: dict) -> None:
    """The descriptor-track HDF5 of a chain's output, when the official L2 scorer can score it as is."""
    if chain.metric != "l2":
        log.warning(
            "chain %r is searched by inner product; the descriptor track scores by squared L2, so no "
            "descriptors.h5 is written for it (use postprocess score_norm_l2 for a descriptor-track form)",
            chain.name,
        )
        return
    if q.shape[1] > DESCRIPTOR_TRACK_MAX_DIM:
        log.warning(
            "chain %r gives %d dims > %d: no descriptors.h5 (descriptor-track limit; add a PCA to %d)",
            chain.name,
            q.shape[1],
            DESCRIPTOR_TRACK_MAX_DIM,
            DESCRIPTOR_TRACK_MAX_DIM,
        )
        return
    write_descriptor_submission(path, DescriptorSubmission(qids, q, rids, r), **known)
