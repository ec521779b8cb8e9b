"""Entry point `generate_data`: parameters, checks and the atomic write of generated data."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

from sparkmlops.core import choices, tracking
from sparkmlops.core.errors import UserInputError
from sparkmlops.core.entry_points import EntryPoint, param
from sparkmlops.data import generators, parameters, validation, writing

MAX_FILES = 100_000
# dataset name -> what it is, for the error that lists the choices
DATASETS = {"airbnb": "the SF listings schema", "iot": "device readings with device_id, the per-group example"}


@dataclass(frozen=True)
class GenerateParams:
    output_path: str = parameters.output_path("Parquet folder to create (must not exist unless mode=overwrite).")
    n_rows: int = param(generators.DEFAULT_N_ROWS, "Rows (7146 = the real data's size).")
    n_files: int = param(1, "Number of parquet part files.")
    seed: int = param(generators.DEFAULT_SEED, "Same seed, same rows, whatever n_files.")
    mode: str = parameters.output_mode()
    dataset: str = param("airbnb", "", choices=DATASETS)
    n_devices: int = param(generators.DEFAULT_N_DEVICES, "Number of devices (dataset=iot only).")
    drift: bool = param(
        False, "The drifted variant (airbnb only): prices up 50%, new neighbourhoods, more missing reviews."
    )

    def validate(self) -> "GenerateParams":
        if not self.output_path:
            raise UserInputError("output_path is empty: pass -P output_path=<folder to create>.")
        choices.check("dataset", self.dataset, DATASETS)
        # A changed n_devices with airbnb is a mistake (probably a forgotten -P dataset=iot), not a no-op.
        if self.dataset != "iot" and self.n_devices != generators.DEFAULT_N_DEVICES:
            raise UserInputError(f"n_devices applies to dataset=iot only, got n_devices={self.n_devices} with "
                                 f"dataset={self.dataset}: pass -P dataset=iot or drop n_devices.")
        generators.check_n_devices(self.n_devices)
        if self.drift and self.dataset != "airbnb":
            raise UserInputError(f"drift applies to dataset=airbnb only, got dataset={self.dataset}.")
        if self.n_rows < 1:
            raise UserInputError(f"n_rows must be >= 1, got {self.n_rows}.")
        if not 1 <= self.n_files <= min(self.n_rows, MAX_FILES):
            raise UserInputError(f"n_files must be between 1 and min(n_rows, {MAX_FILES}), got {self.n_files}.")
        if self.mode not in ("error", "overwrite"):
            raise UserInputError(f"mode must be 'error' or 'overwrite', got '{self.mode}'.")
        validation.check_output_path(self.output_path, self.mode)
        return self

    def as_dict(self) -> dict:
        return asdict(self)


def generate_and_write(spark, params: GenerateParams) -> dict:
    """Generate ``params.n_rows`` rows of ``params.dataset`` into ``params.n_files`` files; log rows, files
    and seconds."""
    started = time.perf_counter()
    if params.dataset == "iot":
        df = generators.generate_iot(spark, params.n_rows, params.seed, n_devices=params.n_devices,
                                   n_partitions=params.n_files)
    else:
        df = generators.generate_airbnb(spark, params.n_rows, params.seed, n_partitions=params.n_files,
                                      drift=params.drift)
    writing.write_parquet_atomically(df, params.output_path, mode=params.mode)
    seconds = time.perf_counter() - started
    summary = {"rows": params.n_rows, "files": params.n_files, "seconds": seconds}
    tracking.log_metrics({"rows_written": params.n_rows, "seconds": seconds,
                          "rows_per_second": params.n_rows / seconds if seconds else 0.0})
    return summary


GENERATE_DATA = EntryPoint(
    name="generate_data",
    script="generate_data.py",
    summary="Generate the synthetic dataset.",
    params=GenerateParams,
    job=lambda spark, params, checked: generate_and_write(spark, checked),
    run_name=lambda p: f"generate_data {p.dataset} {p.n_rows} rows" + (" drift" if p.drift else ""),
    report=lambda p, summary: (
        f"generate_data: wrote {summary['rows']} rows in {summary['files']} files to {p.output_path} "
        f"({summary['seconds']:.1f} s)"
    ),
)
