"""Lightning's CSV logger, except that a resumed run keeps the metrics its earlier part wrote."""

from __future__ import annotations

import csv

from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter


class _KeepingWriter(ExperimentWriter):
    """Keeps the rows of an existing metrics.csv logged before step `keep_before_step` (the step of the checkpoint
    that the run resumes from; later rows are logged again by the resumed run). Lightning's writer deletes the file."""

    def __init__(self, log_dir: str, keep_before_step: int | None):
        self.keep_before_step = keep_before_step
        super().__init__(log_dir=log_dir)

    def _check_log_dir_exists(self) -> None:
        if self.keep_before_step is None or not self._fs.isfile(self.metrics_file_path):
            return super()._check_log_dir_exists()
        with self._fs.open(self.metrics_file_path, "r", newline="") as file:
            reader = csv.DictReader(file)
            rows = [row for row in reader if row.get("step") and int(row["step"]) < self.keep_before_step]
            fields = list(reader.fieldnames or [])
        with self._fs.open(self.metrics_file_path, "w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)
        self.metrics_keys = fields  # appended rows use the same columns (new ones rewrite the header)


class ResumableCSVLogger(CSVLogger):
    """`CSVLogger`; isc_research.train sets `keep_before_step` when the run resumes from a checkpoint."""

    keep_before_step: int | None = None

    @property
    def experiment(self) -> _KeepingWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _KeepingWriter(self.log_dir, self.keep_before_step)
        return self._experiment
