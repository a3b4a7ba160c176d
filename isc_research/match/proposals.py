"""Selective search (Uijlings et al., IJCV 2013) as a query-crop provider: D²LV's region proposals (RECIPES §5.3).

D²LV's ``Test/augmentation/query/selective_search_nms.py`` called the pip package ``selectivesearch`` with
scale 500, σ 0.9, min_size 10, kept regions of ≥ 2,000 pixels whose box aspect is ≤ 2 (each box once), and
suppressed boxes overlapping a kept one by IoU > 0.5. Neither that package nor opencv-contrib's
``ximgproc.segmentation`` is a dependency of isc (the latter would replace opencv-python-headless), so the
algorithm is written here on scikit-image's Felzenszwalb segmentation, with the package's four similarities:

1. Felzenszwalb–Huttenlocher graph segmentation (``skimage.segmentation.felzenszwalb``, scale/σ/min_size).
2. Every segment is a region with its pixel count, box, colour histogram (25 bins per RGB channel) and texture
   histogram (10 bins of a uniform local binary pattern per channel), each L1-normalised.
3. Neighbouring regions (4-connected pixels) are merged greedily, most similar pair first, where similarity =
   histogram intersection of colour + of texture + size (1 − (sᵢ+sⱼ)/image)
   + fill (1 − (box∪ − sᵢ − sⱼ)/image);
   a merged region's histograms are the size-weighted means. Every region ever formed is a proposal.
4. D²LV's filters and NMS (in the order of the proposals' boxes; its NMS took an unordered set's order).

Region sizes and the 2,000-pixel floor are in pixels of the image as decoded; when `isc_research.match.views` decoded
it at reduced size (JPEG draft mode), the floor is scaled by the area ratio so that it holds in file pixels.
"""

from __future__ import annotations

import heapq

import numpy as np
from PIL import Image

from isc_research.match.crops import Box

__all__ = ["SelectiveSearch", "nms"]

_COLOUR_BINS, _TEXTURE_BINS = 25, 10


def nms(boxes: np.ndarray, iou: float) -> list[int]:
    """Indices of the boxes kept by greedy non-maximum suppression in the given order: a box is dropped when
    its IoU with a kept box exceeds `iou` (areas as D²LV's NMS: (x1 − x0 + 1)(y1 − y0 + 1))."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    area = (boxes[:, 2] - boxes[:, 0] + 1) * (boxes[:, 3] - boxes[:, 1] + 1)
    order, keep = np.arange(len(boxes)), []
    while len(order):
        i, rest = order[0], order[1:]
        keep.append(int(i))
        w = np.maximum(0, np.minimum(boxes[i, 2], boxes[rest, 2]) - np.maximum(boxes[i, 0], boxes[rest, 0]) + 1)
        h = np.maximum(0, np.minimum(boxes[i, 3], boxes[rest, 3]) - np.maximum(boxes[i, 1], boxes[rest, 1]) + 1)
        inter = w * h
        order = rest[inter / (area[i] + area[rest] - inter) <= iou]
    return keep


class SelectiveSearch:
    """Region proposals of an image; `crops(image)` returns their boxes after D²LV's filters and NMS."""

    def __init__(
        self,
        scale: float = 500,
        sigma: float = 0.9,
        min_size: int = 10,
        min_region: int = 2000,
        max_aspect: float = 2.0,
        nms_iou: float = 0.5,
        name: str = "selective_search",
    ) -> None:
        if scale <= 0 or sigma < 0 or min_size < 1:
            raise ValueError(
                f"SelectiveSearch: scale > 0, sigma >= 0, min_size >= 1 needed, got {scale}, {sigma}, {min_size}"
            )
        if max_aspect < 1 or not 0 < nms_iou <= 1:
            raise ValueError(
                f"SelectiveSearch: max_aspect >= 1 and nms_iou in (0, 1] needed, got {max_aspect}, {nms_iou}"
            )
        self.scale, self.sigma, self.min_size = float(scale), float(sigma), int(min_size)
        self.min_region, self.max_aspect, self.nms_iou = int(min_region), float(max_aspect), float(nms_iou)
        self.name = name

    def regions(self, rgb: np.ndarray) -> list[tuple[Box, int]]:
        """Every region of the hierarchy: (box x0, y0, x1, y1 exclusive, pixel count), segments first."""
        from skimage.feature import local_binary_pattern
        from skimage.segmentation import felzenszwalb

        labels = felzenszwalb(rgb, scale=self.scale, sigma=self.sigma, min_size=self.min_size)
        n = int(labels.max()) + 1
        h, w = labels.shape
        flat = labels.ravel()
        size = np.bincount(flat, minlength=n).astype(np.float64)
        ys, xs = np.divmod(np.arange(h * w), w)
        boxes = np.stack([np.full(n, w), np.full(n, h), np.zeros(n, int), np.zeros(n, int)], 1)
        for column, values, reduce in (
            (0, xs, np.minimum),
            (1, ys, np.minimum),
            (2, xs + 1, np.maximum),
            (3, ys + 1, np.maximum),
        ):
            reduce.at(boxes[:, column], flat, values)
        colour, texture = [], []
        for c in range(3):
            channel = rgb[..., c]
            colour.append(_histograms(flat, channel.ravel().astype(np.int64) * _COLOUR_BINS // 256, _COLOUR_BINS, n))
            lbp = local_binary_pattern(channel, 8, 1, method="uniform")  # values 0..9
            texture.append(_histograms(flat, np.minimum(lbp.ravel().astype(int), _TEXTURE_BINS - 1), _TEXTURE_BINS, n))
        colour_h, texture_h = _l1(np.hstack(colour)), _l1(np.hstack(texture))
        edges = np.concatenate(
            [
                np.stack([labels[:, :-1].ravel(), labels[:, 1:].ravel()], 1),
                np.stack([labels[:-1].ravel(), labels[1:].ravel()], 1),
            ]
        )
        edges = np.unique(np.sort(edges[edges[:, 0] != edges[:, 1]], axis=1), axis=0)
        neighbours: dict[int, set[int]] = {i: set() for i in range(n)}
        for a, b in edges.tolist():
            neighbours[a].add(b)
            neighbours[b].add(a)
        regions = {i: [boxes[i].copy(), size[i], colour_h[i], texture_h[i]] for i in range(n)}
        total = float(h * w)

        def similarity(a: int, b: int) -> float:
            ra, rb = regions[a], regions[b]
            union = np.r_[np.minimum(ra[0][:2], rb[0][:2]), np.maximum(ra[0][2:], rb[0][2:])]
            fill = 1 - ((union[2] - union[0]) * (union[3] - union[1]) - ra[1] - rb[1]) / total
            return (
                float(np.minimum(ra[2], rb[2]).sum())
                + float(np.minimum(ra[3], rb[3]).sum())
                + 1
                - (ra[1] + rb[1]) / total
                + fill
            )

        heap = [(-similarity(a, b), a, b) for a, b in edges.tolist()]
        heapq.heapify(heap)
        alive = set(regions)
        out = [(tuple(int(v) for v in boxes[i]), int(size[i])) for i in range(n)]
        new = n
        while heap:
            _, a, b = heapq.heappop(heap)
            if a not in alive or b not in alive:
                continue  # a stale pair: one side was merged already
            ra, rb = regions[a], regions[b]
            s = ra[1] + rb[1]
            box = np.r_[np.minimum(ra[0][:2], rb[0][:2]), np.maximum(ra[0][2:], rb[0][2:])]
            regions[new] = [box, s, (ra[2] * ra[1] + rb[2] * rb[1]) / s, (ra[3] * ra[1] + rb[3] * rb[1]) / s]
            neighbours[new] = (neighbours[a] | neighbours[b]) - {a, b}
            alive -= {a, b}
            for c in neighbours[new]:
                neighbours[c] -= {a, b}
                neighbours[c].add(new)
                heapq.heappush(heap, (-similarity(new, c), c, new))
            alive.add(new)
            out.append((tuple(int(v) for v in box), int(s)))
            new += 1
        return out

    def crops(self, image: Image.Image) -> list[Box]:
        w0, h0 = image.info.get("source_size", image.size)
        area_ratio = (image.width * image.height) / max(1, w0 * h0)  # < 1 when decoded at reduced size
        rgb = np.asarray(image.convert("RGB"))
        seen, boxes = set(), []
        for box, size in self.regions(rgb):
            bw, bh = box[2] - box[0], box[3] - box[1]
            if box in seen or size < self.min_region * area_ratio or max(bw / bh, bh / bw) > self.max_aspect:
                continue
            seen.add(box)
            boxes.append(box)
        if not boxes:
            return []
        boxes.sort()
        inclusive = np.asarray(boxes) - [0, 0, 1, 1]  # D²LV's boxes end at the last pixel (x + w of its rects)
        return [boxes[i] for i in nms(inclusive, self.nms_iou)]


def _histograms(labels: np.ndarray, bins: np.ndarray, n_bins: int, n: int) -> np.ndarray:
    return np.bincount(labels * n_bins + bins, minlength=n * n_bins).reshape(n, n_bins).astype(np.float64)


def _l1(h: np.ndarray) -> np.ndarray:
    return h / np.maximum(h.sum(axis=1, keepdims=True), 1e-12)
