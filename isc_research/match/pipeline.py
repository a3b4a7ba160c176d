"""isc-match: descriptor candidates (whole images and crops) → verification → score fusion → matching-track CSV.

Files in paths.output_dir: predictions.csv (query_id,reference_id,score; ≤ max_rows, scored by isc-score),
candidates.csv (the same pairs with their descriptor and verifier scores) and metrics.json (descriptor-only
µAP of the same checkpoint, candidate µAP and recall, matched µAP, verification cost).
"""

from __future__ import annotations

import json
import logging
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np
from hydra.utils import instantiate
from omegaconf import DictConfig
from PIL import Image
from tqdm import tqdm

from isc_research.config import check_required
from isc_research.data.disc import load_disc
from isc_research.data.records import ImageRecord
from isc_research.finite import check_finite
from isc_research.formats import write_predictions
from isc_research.images import load_image
from isc_research.match.candidates import Entries, view_candidates
from isc_research.match.crops import ROTATIONS
from isc_research.match.fusion import best_entry, combine, fuse_pairs, voted
from isc_research.match.verifiers import NoVerifier, check_verifier
from isc_research.match.views import ViewDescriptors, embed_views
from isc_research.metric import GroundTruth, Predictions, evaluate
from isc_research.search import global_candidates

log = logging.getLogger(__name__)

__all__ = ["match"]

VERIFY_VIEWS = ("whole", "best_view", "both")
VOTE_PER = ("query", "query_view")


def _components(cfg: DictConfig):
    """Crop providers and verifier from their config groups (Hydra _target_), checked before any work."""
    query_crops = instantiate(cfg.query_crops)
    reference_crops = instantiate(cfg.reference_crops)
    for role, provider in (("query_crops", query_crops), ("reference_crops", reference_crops)):
        if not callable(getattr(provider, "crops", None)):
            raise TypeError(
                f"{role}: {type(provider).__name__} has no crops(image) method (see isc_research/match/crops.py)"
            )
    verifier = instantiate(cfg.verifier)
    check_verifier(verifier)
    if cfg.eval.get("aspect_step") is not None:  # shapes from a whole split's sizes (aspect_buckets)
        raise ValueError(
            f"eval.aspect_step={cfg.eval.aspect_step} is for isc-eval's extraction; the match track's "
            "views are crops found while loading, each keeping its exact aspect: set eval.aspect_step=null"
        )
    if cfg.fusion.vote_over not in ("models", "views"):
        raise ValueError(f"fusion.vote_over must be models or views, got {cfg.fusion.vote_over!r}")
    if cfg.fusion.get("vote_per", "query") not in VOTE_PER:
        raise ValueError(f"fusion.vote_per must be one of {', '.join(VOTE_PER)}, got {cfg.fusion.vote_per!r}")
    chain = _chain(cfg)
    if chain.models is not None:
        raise ValueError(
            "candidates.postprocess.models must be null: isc-match applies the chain to each model's "
            "descriptors separately"
        )
    if cfg.verify.views not in VERIFY_VIEWS:
        raise ValueError(f"verify.views must be one of {', '.join(VERIFY_VIEWS)}, got {cfg.verify.views!r}")
    return query_crops, reference_crops, verifier


def _chain(cfg: DictConfig):
    """A fresh post-processing chain of candidates.postprocess (isc-eval's chain format; one per model)."""
    from isc_research.postprocess.chain import build_chain

    return build_chain("candidates.postprocess", cfg.candidates.get("postprocess") or {"steps": {}, "metric": "l2"})


def _sizes(cfg: DictConfig) -> list:
    """eval.size as a list: one pipeline per side (D²LV ran the whole pipeline at 200, 256 and 320, RECIPES §5.3)."""
    from omegaconf import ListConfig

    size = cfg.eval.size
    sizes = list(size) if isinstance(size, list | ListConfig) else [size]
    if not sizes:
        raise ValueError("eval.size is an empty list: give a side (e.g. 256) or several ([200,256,320])")
    return sizes


def _postprocessed(cfg: DictConfig, extractor, data, qv: ViewDescriptors, rv: ViewDescriptors, folder: Path):
    """The views' descriptors through candidates.postprocess, fitted on this model's training descriptors when
    a step needs them (streamed to folder/training.h5, reused when rerun), and the metric to search them by."""
    from dataclasses import replace

    from isc_research.extract import extract_to_hdf5, read_descriptors

    chain = _chain(cfg)
    training = None
    if chain.needs_training:
        if not data.training:
            raise ValueError(
                f"candidates.postprocess ({chain.describe()}) needs training-set descriptors but the "
                "dataset has no training images"
            )
        path = extract_to_hdf5(
            extractor,
            data.training,
            folder / "training.h5",
            batch_size=int(cfg.eval.batch_size),
            num_workers=int(cfg.eval.num_workers),
            draft_size=cfg.eval.draft_size,
            desc=f"{extractor.name} training",
        )
        training = read_descriptors(path)[1]
        check_finite(training, f"{extractor.name} training")
    chain.fit(training)
    qv = replace(qv, vectors=chain.transform(qv.vectors, "query"))
    rv = replace(rv, vectors=chain.transform(rv.vectors, "reference"))
    return qv, rv, ("ip" if chain.metric == "ip" else "cosine"), chain.describe()


def _merged_by_max(preds: Predictions, path, max_rows: int | None) -> Predictions:
    """This run's rows and another run's predictions.csv, one row per (query, reference) with the higher score,
    best first, capped at max_rows (D²LV's "choice 2" merged its GT-pair models' rows by max,
    Test/aggregate_choice2.py, RECIPES §5.2)."""
    from isc_research.formats import read_predictions

    other = read_predictions(Path(str(path)).expanduser())
    q = np.concatenate([preds.query_ids, other.query_ids]).astype(str)
    r = np.concatenate([preds.reference_ids, other.reference_ids]).astype(str)
    pairs, keys = np.unique(np.char.add(np.char.add(q, "\t"), r), return_inverse=True)
    unique, score, _ = fuse_pairs(keys, np.concatenate([preds.scores, other.scores]), "max")
    order = np.argsort(-score, kind="stable")[:max_rows]
    split = np.char.partition(pairs[unique[order]], "\t")
    log.info("merged %d rows with %d rows of %s by max: %d pairs", len(preds), len(other), path, len(unique))
    return Predictions(split[:, 0], split[:, 2], score[order])


def _skipped_references(path, references) -> np.ndarray | None:
    """Per reference: listed in the file `path` (one reference id per line), whose crops are then not searched
    (D²LV removed the reference crops of face images, face_del.npy, RECIPES §5.3); None when path is null."""
    if path is None:
        return None
    file = Path(str(path)).expanduser()
    if not file.is_file():
        raise FileNotFoundError(
            f"candidates.skip_reference_crops_of={str(file)!r} does not exist: give a text file "
            "of reference ids, one per line"
        )
    listed = {line.strip() for line in file.read_text(encoding="utf-8").splitlines() if line.strip()}
    known = {r.id for r in references}
    unknown = sorted(listed - known)
    if unknown:
        raise ValueError(f"{file}: {len(unknown)} id(s) are not references of this dataset (first: {unknown[0]!r})")
    return np.array([r.id in listed for r in references], bool)


class _ImageCache:
    """Decoded images by path, least recently used dropped first."""

    def __init__(self, size: int, draft_size: int | None) -> None:
        self.size, self.draft_size = max(1, int(size)), draft_size
        self._images: OrderedDict[Path, Image.Image] = OrderedDict()

    def get(self, record: ImageRecord) -> Image.Image:
        image = self._images.get(record.path)
        if image is None:
            image = load_image(record.path, draft_size=self.draft_size)
            self._images[record.path] = image
            if len(self._images) > self.size:
                self._images.popitem(last=False)
        else:
            self._images.move_to_end(record.path)
        return image


def _cap_per_query(query: np.ndarray, score: np.ndarray, limit: int | None) -> np.ndarray:
    """Indices of the `limit` best-scored pairs of every query (all when limit is None), by query then score."""
    order = np.lexsort((-score, query))
    if limit is None:
        return order
    q = query[order]
    starts = np.flatnonzero(np.r_[True, q[1:] != q[:-1]])
    rank = np.arange(len(q)) - np.repeat(starts, np.diff(np.r_[starts, len(q)]))
    return order[rank < int(limit)]


def _verify(cfg: DictConfig, verifier, data, pairs: dict, views: tuple) -> tuple[np.ndarray, dict]:
    """Verifier scores of the candidate pairs (fused over whole/best-view inputs) and the cost of computing them."""
    q_views, r_views = views
    cache = _ImageCache(cfg.verify.image_cache, cfg.verify.draft_size)
    inputs = ["whole", "best_view"] if cfg.verify.views == "both" else [cfg.verify.views]
    n = len(pairs["query"])
    batch = max(1, int(cfg.verify.batch_pairs))
    scores = {name: np.zeros(n) for name in inputs}
    load_s = verify_s = 0.0
    with tqdm(total=n * len(inputs), desc=f"verify ({verifier.name})", unit="pair") as bar:
        for start in range(0, n, batch):
            rows = np.arange(start, min(n, start + batch))
            for name in inputs:
                t0 = time.perf_counter()
                qs, rs = [], []
                for i in rows:
                    q_img = cache.get(data.queries[pairs["query"][i]])
                    r_img = cache.get(data.references[pairs["reference"][i]])
                    if name == "best_view":
                        source = pairs["source"][i]
                        q_img = _view_image(q_views[source], pairs["query_view"][i], q_img)
                        r_img = _view_image(r_views[source], pairs["reference_view"][i], r_img)
                    qs.append(q_img)
                    rs.append(r_img)
                t1 = time.perf_counter()
                out = np.asarray(verifier.score_pairs(qs, rs), np.float64).reshape(-1)
                t2 = time.perf_counter()
                if len(out) != len(rows):
                    raise ValueError(f"verifier {verifier.name!r} returned {len(out)} scores for {len(rows)} pairs")
                scores[name][rows] = out
                load_s, verify_s = load_s + t1 - t0, verify_s + t2 - t1
                bar.update(len(rows))
    if len(inputs) == 1:
        fused = scores[inputs[0]]
    else:
        keys = np.tile(np.arange(n), len(inputs))
        _, fused, _ = fuse_pairs(keys, np.concatenate([scores[k] for k in inputs]), cfg.fusion.verified)
    n_queries = len(data.queries)
    total = load_s + verify_s
    cost = {
        "verifier": verifier.name,
        "inputs": inputs,
        "pairs": int(n),
        "seconds": round(total, 3),
        "image_load_seconds": round(load_s, 3),
        "ms_per_query": round(1000 * total / max(1, n_queries), 3),
        "ms_per_pair": round(1000 * total / max(1, n * len(inputs)), 3),
        "verifier_ms_per_pair": round(1000 * verify_s / max(1, n * len(inputs)), 3),
    }
    return fused, cost


def _view_image(views: ViewDescriptors, view: int, image: Image.Image) -> Image.Image:
    """The sub-image of `image` that a view was embedded from: its box, then its rotation."""
    out = image.crop(tuple(_scaled_box(views, view, image)))
    rotation = 0 if views.rotation is None else int(views.rotation[view])
    return out.transpose(ROTATIONS[rotation]) if rotation else out


def _scaled_box(views: ViewDescriptors, view: int, image: Image.Image) -> np.ndarray:
    """A view's box in the pixels of `image` (the view was cut from the image decoded for extraction, which
    may be smaller: draft mode)."""
    box = views.boxes[view].astype(np.float64)
    whole = views.boxes[np.flatnonzero((views.owner == views.owner[view]) & views.whole)[0]]
    sx, sy = image.width / max(1, whole[2]), image.height / max(1, whole[3])
    out = np.round(box * [sx, sy, sx, sy]).astype(int)
    out[2:] = np.maximum(out[2:], out[:2] + 1)
    return out


def _descriptor_only(
    q: ViewDescriptors, r: ViewDescriptors, data, gt: GroundTruth, per_query: int, search_device: str
) -> dict:
    """µAP of the whole-image descriptors under the official descriptor-track rule (isc-eval's raw chain)."""
    qi, ri = np.flatnonzero(q.whole), np.flatnonzero(r.whole)
    qids = np.array([data.queries[i].id for i in q.owner[qi]])
    rids = np.array([data.references[i].id for i in r.owner[ri]])
    preds = global_candidates(
        q.vectors[qi], r.vectors[ri], qids, rids, num_results=per_query * len(qids), device=search_device
    )
    return evaluate(gt, preds).to_dict()


def match(cfg: DictConfig) -> dict:
    """Run isc-match as configured; returns the metrics written to metrics.json. The output folder follows
    isc-eval's rule (isc_research.evaluate.evaluate_checkpoint): new, or an unfinished run of the same settings, or
    overwrite=true."""
    from isc_research.runs import check_writable, claim_eval_folder
    from isc_research.runs import recorded_run

    check_required(cfg)  # e.g. dataset=disc21 without dataset.root: stop before any work
    output_dir = Path(cfg.paths.output_dir)
    claim_eval_folder(cfg, output_dir, "isc-match")
    check_writable(output_dir)
    with recorded_run(output_dir, cfg, sigterm=True):
        return _match(cfg, output_dir)


def _match(cfg: DictConfig, output_dir: Path) -> dict:
    from isc_research.extract import build_extractors
    from isc_research.scaling import configure_threads

    query_crops, reference_crops, verifier = _components(cfg)
    configure_threads(cfg.get("torch_threads"), int(cfg.eval.num_workers))
    sizes = _sizes(cfg)
    data = load_disc(cfg.dataset)
    gt = data.ground_truth
    started = time.perf_counter()

    common = dict(
        batch_size=int(cfg.eval.batch_size), num_workers=int(cfg.eval.num_workers), draft_size=cfg.eval.draft_size
    )
    cand, fu = cfg.candidates, cfg.fusion
    n_refs = len(data.references)
    per_view = fu.get("vote_per", "query") == "query_view"
    skipped = _skipped_references(cand.get("skip_reference_crops_of"), data.references)
    # one source of candidates per (size, model)
    extractors, source_model, source_size = [], [], []
    for s, size in enumerate(sizes):
        size_cfg = cfg.copy()
        size_cfg.eval.size = size
        for m, extractor in enumerate(build_extractors(size_cfg)):
            extractors.append(extractor)
            source_model.append(m)
            source_size.append(s)
    source_model, source_size = np.asarray(source_model), np.asarray(source_size)
    # every image decoded and cut into views once for all sizes and models (D²LV cut its sub-images once and
    # ran each scale on them), so a view index means the same sub-image for every source
    query_views = embed_views(extractors, data.queries, query_crops, desc="query views", **common)
    reference_views = embed_views(extractors, data.references, reference_crops, desc="reference views", **common)
    if skipped is not None:
        reference_views = [rv.select(rv.whole | ~skipped[rv.owner]) for rv in reference_views]
    source_views, entries, descriptor_metrics, chain_name = [], [], [], "raw"
    for i, (extractor, qv, rv) in enumerate(zip(extractors, query_views, reference_views)):
        check_finite(qv.vectors, f"model {source_model[i]} query views")  # a precision error, before any search
        check_finite(rv.vectors, f"model {source_model[i]} reference views")
        descriptor_metrics.append(
            _descriptor_only(qv, rv, data, gt, int(cand.descriptor_results_per_query), cfg.eval.search_device)
        )
        side = getattr(extractor.transform, "size", sizes[source_size[i]])
        qv, rv, metric, chain_name = _postprocessed(
            cfg, extractor, data, qv, rv, output_dir / "descriptors" / f"size{side}_{extractor.name}"
        )
        source_views.append((qv, rv))
        found = view_candidates(
            qv,
            rv,
            k=int(cand.k),
            k_crops=int(cand.k_crops),
            crop_penalty=float(cand.crop_penalty),
            source=i,
            search_device=cfg.eval.search_device,
            metric=metric,
            crops_vs_crops=bool(cand.get("crops_vs_crops", True)),
        )
        cap = cand.get("max_per_source")
        if cap is not None and len(found) > int(cap):  # the best-scored entries over all query views
            found = found.select(np.isin(np.arange(len(found)), np.argsort(-found.score, kind="stable")[: int(cap)]))
        entries.append(found)
    hits = Entries.concatenate(entries)
    # votes within one size (D²LV voted over the 3 backbones of one pipeline, then merged the pipelines'
    # results, RECIPES §5.3 steps 1 and 4-5), per query or per query view
    unit = hits.query_view if per_view else hits.query
    vote_keys = (source_size[hits.source] * (int(unit.max(initial=0)) + 1) + unit) * n_refs + hits.reference
    sources = source_model[hits.source] if fu.vote_over == "models" else None
    hits = hits.select(voted(vote_keys, sources, int(fu.min_votes)))
    extract_s = time.perf_counter() - started
    keys = hits.query * n_refs + hits.reference
    sources = source_model[hits.source] if fu.vote_over == "models" else None
    pair_keys, desc_score, votes = fuse_pairs(keys, hits.score, fu.pairs, sources=sources)
    best_keys, best = best_entry(keys, hits.score)
    best = best[np.searchsorted(best_keys, pair_keys)]
    pairs = {
        "query": pair_keys // n_refs,
        "reference": pair_keys % n_refs,
        "score": desc_score,
        "votes": votes,
        "query_view": hits.query_view[best],
        "reference_view": hits.reference_view[best],
        "source": hits.source[best],
    }
    keep = _cap_per_query(pairs["query"], pairs["score"], cand.max_per_query)
    pairs = {k: v[keep] for k, v in pairs.items()}

    qids = np.array([r.id for r in data.queries])
    rids = np.array([r.id for r in data.references])
    pair_q, pair_r = qids[pairs["query"]], rids[pairs["reference"]]
    shown = _cap_per_query(pairs["query"], pairs["score"], cfg.results_per_query)  # as the submission, unverified
    candidate_metrics = evaluate(gt, Predictions(pair_q[shown], pair_r[shown], pairs["score"][shown])).to_dict()
    found = sum(gt.matches.get(q) == r for q, r in zip(pair_q.tolist(), pair_r.tolist()))
    candidate_metrics["recall"] = found / max(1, gt.n_pairs)

    if isinstance(verifier, NoVerifier):
        verified, cost = None, {"verifier": "none", "pairs": 0, "seconds": 0.0, "ms_per_query": 0.0, "ms_per_pair": 0.0}
        rule = "descriptor"
    else:
        views = ([q for q, _ in source_views], [r for _, r in source_views])
        verified, cost = _verify(cfg, verifier, data, pairs, views)
        rule = fu.combine
    final = combine(
        pairs["score"],
        verified,
        rule,
        descriptor_weight=float(fu.descriptor_weight),
        verifier_weight=float(fu.verifier_weight),
        boost=float(fu.boost),
        threshold=float(fu.threshold),
    )
    submitted = _cap_per_query(pairs["query"], final, cfg.results_per_query)
    order = submitted[np.argsort(-final[submitted], kind="stable")]
    max_rows = None if cfg.max_rows is None else int(cfg.max_rows)
    if max_rows is not None and len(order) > max_rows:
        log.info("keeping the %d best-scored of %d pairs (max_rows)", max_rows, len(order))
        order = order[:max_rows]
    preds = Predictions(pair_q[order], pair_r[order], final[order])
    if cfg.get("merge_predictions"):
        preds = _merged_by_max(preds, cfg.merge_predictions, max_rows)
    write_predictions(
        output_dir / "predictions.csv", preds, max_rows=max_rows, known_query_ids=qids, known_reference_ids=rids
    )
    _write_candidates(output_dir / "candidates.csv", pair_q, pair_r, pairs, verified, final)
    matched = evaluate(gt, preds).to_dict()

    summary = {
        "uAP": matched["uAP"],
        "descriptor_uAP": descriptor_metrics[0]["uAP"],
        "candidates_uAP": candidate_metrics["uAP"],
        "candidate_recall": candidate_metrics["recall"],
        "matched": matched,
        "descriptor_only": descriptor_metrics if len(descriptor_metrics) > 1 else descriptor_metrics[0],
        "candidates": {
            **candidate_metrics,
            "pairs": int(len(pair_q)),
            "query_views": int(len(source_views[0][0])),
            "reference_views": int(len(source_views[0][1])),
        },
        "verification": cost,
        "extraction_seconds": round(extract_s, 3),
        "setup": {
            "verifier": verifier.name,
            "query_crops": getattr(query_crops, "name", type(query_crops).__name__),
            "reference_crops": getattr(reference_crops, "name", type(reference_crops).__name__),
            "combine": rule,
            "pairs_rule": fu.pairs,
            "min_votes": int(fu.min_votes),
            "vote_per": fu.get("vote_per", "query"),
            "postprocess": chain_name,
            "results_per_query": cfg.results_per_query,
            "sizes": [None if v is None else int(v) for v in sizes],
            "models": len(set(source_model)),
            "queries": len(qids),
            "references": len(rids),
        },
    }
    (output_dir / "metrics.json").write_text(json.dumps(summary, indent=2))
    log.info(
        "descriptor-only µAP %.4f | candidates µAP %.4f (recall %.3f) | matched µAP %.4f | verification "
        "%.1f ms/query, %.2f ms/pair",
        summary["descriptor_uAP"],
        summary["candidates_uAP"],
        summary["candidate_recall"],
        summary["uAP"],
        cost["ms_per_query"],
        cost["ms_per_pair"],
    )
    return summary


def _write_candidates(path: Path, qids, rids, pairs: dict, verified, final) -> None:
    import csv

    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["query_id", "reference_id", "descriptor_score", "verifier_score", "score", "votes"])
        v = verified if verified is not None else np.full(len(qids), np.nan)
        for row in zip(
            qids.tolist(), rids.tolist(), pairs["score"].tolist(), v.tolist(), final.tolist(), pairs["votes"].tolist()
        ):
            w.writerow(
                [row[0], row[1], f"{row[2]:.6f}", "" if np.isnan(row[3]) else f"{row[3]:.6f}", f"{row[4]:.6f}", row[5]]
            )
