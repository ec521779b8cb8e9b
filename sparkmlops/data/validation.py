"""Data: the SF Airbnb schema contract, the deterministic generator, and the one loader/validator.

The real listings data (CC0, 7,146 rows, 34 columns) cannot ship with the project, so
``generate_airbnb`` builds rows with exactly its schema, realistic categories and ranges, and a price
that depends on the features plus noise. Every random draw is a hash of (seed, row id, draw number),
so a row depends only on its id and the seed: the output is the same whatever the number of files,
partitions or executors, and the first N rows of a larger dataset equal the N-row dataset.
``generate_iot`` builds the book's per-group example (Learning Spark ch. 11, one model per device with
``groupBy("device_id").applyInPandas``) the same way: sensor readings whose power depends on the
sensors through coefficients that differ per device.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from sparkmlops.environment import PROJECT_ROOT
from sparkmlops.errors import UserInputError

# Bump when the generator's output changes, so cached default data is regenerated.
GENERATOR_VERSION = 1
DEFAULT_N_ROWS = 7146
DEFAULT_SEED = 42
DEFAULT_LABEL = "price"
IOT_LABEL = "power"
IOT_GROUP_COL = "device_id"
DEFAULT_N_DEVICES = 36
MAX_DEVICES = 100_000
IOT_COLUMNS: list[tuple[str, str]] = [
    ("device_id", "string"), ("reading_time", "timestamp"), ("temperature", "double"), ("humidity", "double"),
    ("pressure", "double"), ("vibration", "double"), ("power", "double"),
]

# (name, Spark type, nullable) of sf-airbnb-clean.parquet, in its order.
_NA_FLAGS = ["bedrooms_na", "bathrooms_na", "beds_na", "review_scores_rating_na",
             "review_scores_accuracy_na", "review_scores_cleanliness_na", "review_scores_checkin_na",
             "review_scores_communication_na", "review_scores_location_na", "review_scores_value_na"]
AIRBNB_COLUMNS: list[tuple[str, str, bool]] = [
    ("host_is_superhost", "string", True),
    ("cancellation_policy", "string", True),
    ("instant_bookable", "string", True),
    ("host_total_listings_count", "double", True),
    ("neighbourhood_cleansed", "string", True),
    ("latitude", "double", True),
    ("longitude", "double", True),
    ("property_type", "string", True),
    ("room_type", "string", True),
    ("accommodates", "double", True),
    ("bathrooms", "double", True),
    ("bedrooms", "double", True),
    ("beds", "double", True),
    ("bed_type", "string", True),
    ("minimum_nights", "double", True),
    ("number_of_reviews", "double", True),
    ("review_scores_rating", "double", True),
    ("review_scores_accuracy", "double", True),
    ("review_scores_cleanliness", "double", True),
    ("review_scores_checkin", "double", True),
    ("review_scores_communication", "double", True),
    ("review_scores_location", "double", True),
    ("review_scores_value", "double", True),
    ("price", "double", True),
] + [(name, "double", False) for name in _NA_FLAGS]

# Aggregates of the real data (counts, centroids, log-price offset from $150), not its rows.
NEIGHBOURHOODS = [
    ("Mission", 691, 37.7581, -122.4170, +0.06), ("Western Addition", 599, 37.7781, -122.4340, +0.10),
    ("South of Market", 599, 37.7779, -122.4031, +0.14), ("Downtown/Civic Center", 538, 37.7863, -122.4130, -0.07),
    ("Castro/Upper Market", 405, 37.7623, -122.4346, +0.18), ("Bernal Heights", 373, 37.7415, -122.4159, -0.03),
    ("Haight Ashbury", 351, 37.7693, -122.4462, +0.00), ("Noe Valley", 317, 37.7500, -122.4329, +0.15),
    ("Outer Sunset", 269, 37.7567, -122.4939, -0.25), ("Nob Hill", 215, 37.7929, -122.4148, +0.00),
    ("Potrero Hill", 214, 37.7592, -122.3978, +0.07), ("Inner Richmond", 186, 37.7796, -122.4652, +0.00),
    ("Marina", 186, 37.8009, -122.4355, +0.29), ("Excelsior", 162, 37.7250, -122.4248, -0.41),
    ("Russian Hill", 159, 37.8013, -122.4185, +0.34), ("Bayview", 157, 37.7300, -122.3901, -0.42),
    ("Pacific Heights", 155, 37.7925, -122.4329, +0.28), ("Inner Sunset", 154, 37.7602, -122.4651, -0.11),
    ("Outer Mission", 150, 37.7251, -122.4429, -0.37), ("North Beach", 149, 37.8017, -122.4070, +0.15),
    ("Outer Richmond", 147, 37.7774, -122.4944, -0.15), ("Financial District", 134, 37.7910, -122.4002, +0.29),
    ("Parkside", 127, 37.7424, -122.4874, -0.42), ("Chinatown", 118, 37.7923, -122.4073, -0.06),
    ("West of Twin Peaks", 116, 37.7358, -122.4588, -0.14), ("Ocean View", 103, 37.7183, -122.4602, -0.42),
    ("Glen Park", 70, 37.7379, -122.4308, +0.00), ("Twin Peaks", 63, 37.7528, -122.4476, +0.23),
    ("Visitacion Valley", 60, 37.7173, -122.4045, -0.31), ("Lakeshore", 54, 37.7313, -122.4839, -0.44),
    ("Crocker Amazon", 52, 37.7103, -122.4429, -0.66), ("Presidio Heights", 28, 37.7853, -122.4533, -0.05),
    ("Seacliff", 20, 37.7821, -122.5009, -0.11), ("Diamond Heights", 19, 37.7426, -122.4418, +0.13),
    ("Golden Gate Park", 5, 37.7691, -122.4813, +0.21), ("Presidio", 1, 37.8103, -122.4764, -0.36),
]
# (room type, share, log-price offset, mean and sd of accommodates)
ROOM_TYPES = [("Entire home/apt", 4364, 0.26, 3.8, 2.0), ("Private room", 2603, -0.41, 2.2, 1.1),
              ("Shared room", 179, -1.32, 2.4, 1.7)]
# (property type, count, log-price offset)
PROPERTY_TYPES = [
    ("Apartment", 3010, 0.0), ("House", 1990, 0.0), ("Condominium", 760, 0.05), ("Guest suite", 496, -0.1),
    ("Boutique hotel", 183, 0.25), ("Townhouse", 140, 0.05), ("Serviced apartment", 116, 0.2),
    ("Hotel", 100, 0.2), ("Loft", 93, 0.1), ("Hostel", 87, -0.8), ("Guesthouse", 44, -0.1),
    ("Bed and breakfast", 29, 0.05), ("Other", 22, 0.0), ("Aparthotel", 20, 0.2), ("Bungalow", 17, 0.0),
    ("Villa", 10, 0.5), ("Cottage", 8, 0.0), ("Resort", 8, 0.3), ("Cabin", 3, 0.0), ("Tiny house", 3, -0.2),
    ("Boat", 2, 0.3), ("Timeshare", 1, 0.3), ("In-law", 1, -0.2), ("Treehouse", 1, 0.3), ("Castle", 1, 0.8),
    ("Earth house", 1, 0.0),
]
CANCELLATION_POLICIES = [("strict_14_with_grace_period", 3086), ("moderate", 2518), ("flexible", 1424),
                         ("super_strict_30", 66), ("strict", 43), ("super_strict_60", 9)]
BED_TYPES = [("Real Bed", 7073), ("Futon", 32), ("Pull-out Sofa", 23), ("Airbed", 11), ("Couch", 7)]
# (minimum nights, count); the remaining share draws from a log-uniform 1..365
MINIMUM_NIGHTS = [(30.0, 2757), (2.0, 1455), (1.0, 1251), (3.0, 822), (4.0, 270), (5.0, 176), (31.0, 133),
                  (7.0, 72), (60.0, 32), (32.0, 31), (6.0, 31), (180.0, 28)]


# ----------------------------------------------------------------------------------------------
# Paths and inputs (checked before Spark starts)

def is_local_path(path: str) -> bool:
    scheme = urlparse(path).scheme
    return scheme in ("", "file") or (len(scheme) == 1 and os.name == "nt")


def local_path(path: str) -> str:
    return urlparse(path).path if path.startswith("file:") else path


def check_input_path(path: str, what: str = "data_path", allow_empty: bool = False) -> str:
    """Fail fast, before Spark, on a local input that cannot be the data asked for; return it absolute.

    Checked without Spark (pyarrow reads only the parquet footers, so this costs milliseconds even for
    a folder of hundreds of files): the path exists and is readable; a folder holds data files; every
    parquet file is one (a corrupt or foreign file among good ones is named); the data has rows, unless
    ``allow_empty`` (a stream's folder); a CSV has a data row below its header. Remote URIs (s3a://,
    hdfs://, abfss://, ...) are left to Spark, whose error is reworded by ``read_dataset``.
    """
    if not path:
        raise UserInputError(f"{what} is empty: pass -P {what}=<parquet file or folder>.")
    if not is_local_path(path):
        return path
    resolved = os.path.abspath(os.path.expanduser(local_path(path)))
    if not os.path.exists(resolved):
        raise UserInputError(f"{what} '{path}' does not exist: pass an existing parquet file or folder "
                             "(absolute paths are safest with mlflow run).")
    if not os.access(resolved, os.R_OK) or (os.path.isdir(resolved) and not os.access(resolved, os.X_OK)):
        raise UserInputError(f"{what} '{path}' is not readable by this user: fix its permissions.")
    files = data_files(resolved)
    if os.path.isdir(resolved) and not files:
        raise UserInputError(f"{what} '{path}' is an empty folder: point it at a folder with parquet files.")
    if data_format(path) == "csv":
        _check_csv_files(path, what, files, allow_empty)
    else:
        _check_parquet_files(path, what, resolved, files, allow_empty)
    return resolved


def data_files(path: str) -> list[str]:
    """The files Spark reads under ``path``: all but hidden ones (``.*``, ``_*``: _SUCCESS, .crc, staging
    folders), recursively (partition folders such as ``year=2019``)."""
    if not os.path.isdir(path):
        return [path]
    found = []
    for root, dirs, names in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not d.startswith((".", "_")))
        found += [os.path.join(root, n) for n in sorted(names) if not n.startswith((".", "_"))]
    return found


def _check_parquet_files(path: str, what: str, resolved: str, files: list[str], allow_empty: bool) -> None:
    import pyarrow.parquet as pq

    rows, bad = 0, []
    for name in files:
        try:
            rows += pq.read_metadata(name).num_rows
        except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ... for a file that is not parquet
            bad.append((name, " ".join(str(exc).split())[:120] or type(exc).__name__))
    if bad and len(bad) == len(files):
        shown = ", ".join(os.path.relpath(n, resolved) if n != resolved else os.path.basename(n) for n, _ in bad[:3])
        raise UserInputError(f"{what} '{path}' has no parquet files ({shown}{', ...' if len(bad) > 3 else ''} "
                             f"cannot be read as parquet: {bad[0][1]}): point it at parquet data, or a .csv file.")
    if bad:
        names = ", ".join(os.path.relpath(n, resolved) for n, _ in bad[:3]) + (", ..." if len(bad) > 3 else "")
        raise UserInputError(f"{what} '{path}': {len(bad)} of {len(files)} files are not readable parquet "
                             f"({names}: {bad[0][1]}): remove or replace them; nothing was read.")
    if not rows and not allow_empty:
        raise UserInputError(f"{what} '{path}' has no rows (its parquet files hold 0 rows): check the job that "
                             "wrote it.")


def parquet_file_columns(path: str):
    """(file, {column: "string" | "numeric" | other type}) for each parquet file under a local ``path``,
    from its footer (no Spark)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    def kind(arrow_type) -> str:
        if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
            return "string"
        if pa.types.is_integer(arrow_type) or pa.types.is_floating(arrow_type) or pa.types.is_decimal(arrow_type):
            return "numeric"
        return str(arrow_type)

    for name in data_files(path):
        schema = pq.read_schema(name)
        yield name, {field.name: kind(field.type) for field in schema}


def _check_csv_files(path: str, what: str, files: list[str], allow_empty: bool) -> None:
    for name in files:
        try:
            with open(name, "rb") as f:
                lines = [line for _, line in zip(range(2), (ln for ln in f if ln.strip()))]
        except OSError as exc:
            raise UserInputError(f"{what} '{path}' cannot be read: {exc}") from None
        if not lines:
            raise UserInputError(f"{what} '{path}': {os.path.basename(name)} is empty, not a CSV with a header.")
        if len(lines) < 2 and not allow_empty:
            raise UserInputError(f"{what} '{path}' has only a header and no rows: check the job that wrote it.")


def check_output_path(output_path: str, mode: str, input_path: str = "") -> None:
    """Before any work: with mode=error, refuse a local output that exists already; refuse an output
    whose parent is a file, and one inside (or holding) the input, which the job would read back."""
    if not is_local_path(output_path):
        return
    target = os.path.abspath(os.path.expanduser(local_path(output_path)))
    if mode == "error" and os.path.exists(target):
        raise UserInputError(f"output '{output_path}' already exists: choose a new path or pass -P mode=overwrite.")
    parent = os.path.dirname(target)
    while parent and not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if parent and not os.path.isdir(parent):
        raise UserInputError(f"output '{output_path}' cannot be created: '{parent}' is a file, not a folder.")
    if input_path and is_local_path(input_path):
        source = os.path.abspath(os.path.expanduser(local_path(input_path)))
        if target == source:
            raise UserInputError("output_path is the input_path: write the scores somewhere else.")
        if target.startswith(source.rstrip(os.sep) + os.sep):
            raise UserInputError(f"output '{output_path}' is inside the input folder '{input_path}': its files "
                                 "would be read as input next time; write the scores somewhere else.")
        if source.startswith(target.rstrip(os.sep) + os.sep):
            raise UserInputError(f"output '{output_path}' holds the input '{input_path}': writing it would "
                                 "replace the input; write the scores somewhere else.")


def data_format(path: str) -> str:
    return "csv" if path.rstrip("/").lower().endswith(".csv") else "parquet"


def read_dataset(spark, path: str):
    """Read a parquet (default) or CSV (``*.csv``) file or folder; bad files become one clear line."""
    from pyspark.errors import PySparkException

    fmt = data_format(path)
    try:
        if fmt == "csv":
            df = spark.read.csv(path, header=True, inferSchema=True)
        else:
            df = spark.read.parquet(path)
        df.schema  # forces schema resolution, where unreadable files fail
    except (PySparkException, Exception) as exc:  # Py4J errors are not PySparkExceptions
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserInputError(f"could not read '{path}' as {fmt}: {first_line[:300]}") from exc
    return df


# ----------------------------------------------------------------------------------------------
# The generator

def _uniform(seed: int, draw: int, key: str = "id"):
    """A uniform in (0, 1) from (seed, key, draw): independent of partitioning.

    The key is the row id for per-row draws, or a group column (a device index) for draws that every
    row of the group shares; the two kinds use disjoint draw numbers so they never coincide.
    """
    from pyspark.sql import functions as F

    bits = 2 ** 52
    h = F.xxhash64(F.col(key), F.lit(int(seed)), F.lit(int(draw)))
    return (F.pmod(h, F.lit(bits)).cast("double") + 0.5) / float(bits)


def _normal(seed: int, draw: int, key: str = "id"):
    """A standard normal (Box-Muller over two hashed uniforms)."""
    from pyspark.sql import functions as F

    return (F.sqrt(-2.0 * F.log(_uniform(seed, draw, key)))
            * F.cos(2.0 * math.pi * _uniform(seed, draw + 1, key)))


def _categorical(u, choices: list[tuple]):
    """Pick choices[i][0] with probability proportional to choices[i][1], from uniform column u."""
    from pyspark.sql import functions as F

    total = float(sum(c[1] for c in choices))
    cumulative, expr = 0.0, None
    for value, weight, *_ in choices[:-1]:
        cumulative += weight / total
        expr = (F.when(u < cumulative, F.lit(value)) if expr is None
                else expr.when(u < cumulative, F.lit(value)))
    return expr.otherwise(F.lit(choices[-1][0]))


def _lookup(key_col, choices: list[tuple], index: int):
    """Map a categorical column to choices[i][index] (for example a price offset)."""
    from pyspark.sql import functions as F

    expr = None
    for choice in choices:
        cond = key_col == F.lit(choice[0])
        expr = F.when(cond, F.lit(choice[index])) if expr is None else expr.when(cond, F.lit(choice[index]))
    return expr.otherwise(F.lit(0.0))


def _clip(col, low: float, high: float):
    from pyspark.sql import functions as F

    return F.least(F.greatest(col, F.lit(float(low))), F.lit(float(high)))


def _check_n_rows(n_rows: int) -> None:
    if n_rows < 1:
        raise UserInputError(f"n_rows must be >= 1, got {n_rows}.")


def check_n_devices(n_devices: int) -> None:
    if not 1 <= n_devices <= MAX_DEVICES:
        raise UserInputError(f"n_devices must be between 1 and {MAX_DEVICES}, got {n_devices}.")


def _default_partitions(n_rows: int) -> int:
    """About 200,000 rows per partition, at most 1,000 partitions."""
    return max(1, min(n_rows // 200_000 + 1, 1000))


def generate_airbnb(spark, n_rows: int = DEFAULT_N_ROWS, seed: int = DEFAULT_SEED, n_partitions: int | None = None,
                    drift: bool = False):
    """A DataFrame with the real SF Airbnb schema, ``n_rows`` rows, deterministic in ``seed``."""
    from pyspark.sql import functions as F

    _check_n_rows(n_rows)
    parts = n_partitions or _default_partitions(n_rows)
    u, z = (lambda d: _uniform(seed, d)), (lambda d: _normal(seed, d))

    df = spark.range(0, n_rows, 1, parts)
    df = df.select(
        "id",
        _categorical(u(1), NEIGHBOURHOODS).alias("neighbourhood_cleansed"),
        _categorical(u(2), ROOM_TYPES).alias("room_type"),
        _categorical(u(3), PROPERTY_TYPES).alias("property_type"),
        _categorical(u(4), CANCELLATION_POLICIES).alias("cancellation_policy"),
        _categorical(u(5), BED_TYPES).alias("bed_type"),
        F.when(u(6) < 0.41, "t").otherwise("f").alias("host_is_superhost"),
        F.when(u(7) < 0.38, "t").otherwise("f").alias("instant_bookable"),
    )
    nb, room = F.col("neighbourhood_cleansed"), F.col("room_type")
    accommodates = F.round(_clip(_lookup(room, ROOM_TYPES, 3) + _lookup(room, ROOM_TYPES, 4) * z(10), 1, 16))
    df = df.withColumns({
        "latitude": _clip(_lookup(nb, NEIGHBOURHOODS, 2) + 0.006 * z(12), 37.7074, 37.8103),
        "longitude": _clip(_lookup(nb, NEIGHBOURHOODS, 3) + 0.007 * z(14), -122.5131, -122.3698),
        "accommodates": accommodates,
    })
    acc = F.col("accommodates")
    bedrooms = F.when(room == "Entire home/apt", F.round(_clip(acc / 2.0 - 0.3 + 0.6 * z(16), 0, 14))) \
        .otherwise(F.when(u(18) < 0.9, 1.0).otherwise(F.round(_clip(acc / 2.0 + 0.5 * z(16), 0, 14))))
    df = df.withColumn("bedrooms_raw", bedrooms)
    beds = F.round(_clip(F.col("bedrooms_raw") * 0.9 + acc * 0.2 + 0.5 * z(20), 0, 14))
    bathrooms = F.round(2.0 * _clip(1.0 + F.greatest(F.col("bedrooms_raw") - 2.0, F.lit(0.0)) * 0.5
                                    + 0.35 * z(22), 0, 14)) / 2.0
    host_listings = F.when(u(24) < 0.1, F.round(F.exp(4.0 + 3.0 * u(25))))\
        .otherwise(F.floor(F.exp(1.5 * F.abs(z(26)))))
    min_nights = _categorical(u(28), MINIMUM_NIGHTS + [(-1.0, 420)])
    min_nights = F.when(min_nights < 0, F.floor(F.exp(u(29) * math.log(365.0))) + 1.0).otherwise(min_nights)
    reviews = F.when(u(30) < 0.193, 0.0).otherwise(F.greatest(F.floor(_clip(F.exp(3.0 + 1.47 * z(32)), 0, 700)),
                                                              F.lit(1.0)))
    df = df.withColumns({
        "beds_raw": beds, "bathrooms_raw": bathrooms, "host_total_listings_count": host_listings,
        "minimum_nights": _clip(min_nights, 1, 365), "number_of_reviews": reviews,
        "bedrooms_na": F.when(u(34) < 0.0003, 1.0).otherwise(0.0),
        "bathrooms_na": F.when(u(35) < 0.003, 1.0).otherwise(0.0),
        "beds_na": F.when(u(36) < 0.001, 1.0).otherwise(0.0),
    })
    # The real data is cleaned: a missing value is imputed with the median and flagged in *_na.
    no_reviews = F.col("number_of_reviews") == 0
    rating = F.round(_clip(100.0 - F.exp(1.2 + 0.9 * z(38)), 20, 100))
    df = df.withColumns({
        "bedrooms": F.when(F.col("bedrooms_na") == 1.0, 1.0).otherwise(F.col("bedrooms_raw")),
        "bathrooms": F.when(F.col("bathrooms_na") == 1.0, 1.0).otherwise(F.col("bathrooms_raw")),
        "beds": F.when(F.col("beds_na") == 1.0, 1.0).otherwise(F.col("beds_raw")),
        "review_scores_rating": F.when(no_reviews, 98.0).otherwise(rating),
    })
    rating_gap = (100.0 - F.col("review_scores_rating")) / 15.0
    sub_scores = {}
    for i, name in enumerate(["accuracy", "cleanliness", "checkin", "communication", "location", "value"]):
        score = F.round(_clip(10.0 - F.exp(-1.5 + 0.9 * z(40 + 2 * i)) - rating_gap, 2, 10))
        sub_scores[f"review_scores_{name}"] = F.when(no_reviews, 10.0).otherwise(score)
    na_reviews = F.when(no_reviews, 1.0).otherwise(0.0)
    sub_scores.update({flag: na_reviews for flag in _NA_FLAGS if flag.startswith("review_scores")})
    df = df.withColumns(sub_scores)

    log_price = (
        math.log(150.0)
        + _lookup(nb, NEIGHBOURHOODS, 4) * 1.5
        + _lookup(room, ROOM_TYPES, 2)
        + _lookup(F.col("property_type"), PROPERTY_TYPES, 2)
        + 0.14 * (acc - 3.0) + 0.10 * (F.col("bedrooms") - 1.0) + 0.08 * (F.col("bathrooms") - 1.0)
        + F.when(F.col("host_is_superhost") == "t", 0.05).otherwise(0.0)
        + 0.006 * (F.col("review_scores_rating") - 96.0)
        - F.when(F.col("minimum_nights") >= 30, 0.12).otherwise(0.0)
        + 0.30 * z(60)
        # a few luxury listings and data-entry outliers, as in the real data's long tail
        + F.when(u(62) < 0.004, 0.8 + 1.2 * u(63)).otherwise(0.0)
    )
    df = df.withColumn("price", F.round(_clip(F.exp(log_price), 10, 10000)))
    if drift:
        df = _drifted(df, seed)

    def typed(name, dtype, nullable):
        col = F.col(name).cast(dtype)
        # A CASE without ELSE is nullable, like the real file's columns (the condition is always true).
        return (F.when(F.col("id") >= 0, col) if nullable else col).alias(name)

    return df.select(*[typed(*column) for column in AIRBNB_COLUMNS])


# Neighbourhoods the reference never has: drift=true puts a quarter of the listings there.
DRIFT_NEIGHBOURHOODS = [("Treasure Island", 1.0), ("Yerba Buena Island", 1.0), ("Hunters Point Shipyard", 1.0)]
_DRIFT_DRAWS = 900


def _drifted(df, seed: int):
    """The same listings a year later, changed the ways that call for retraining: prices up 50%, a
    quarter of the listings in new neighbourhoods, a fifth more listings with missing review scores."""
    from pyspark.sql import functions as F

    u = lambda draw: _uniform(seed, _DRIFT_DRAWS + draw)  # noqa: E731
    no_reviews = u(2) < 0.2
    changes = {
        "price": F.round(_clip(F.col("price") * 1.5, 10, 10000)),
        "neighbourhood_cleansed": F.when(u(0) < 0.25, _categorical(u(1), DRIFT_NEIGHBOURHOODS))
        .otherwise(F.col("neighbourhood_cleansed")),
    }
    # Missing as the cleaned data encodes it: the imputed median plus the *_na flag (no raw nulls, so
    # the drifted data still trains).
    imputed = {"review_scores_rating": 98.0}
    for name in [c for c, *_ in AIRBNB_COLUMNS if c.startswith("review_scores") and not c.endswith("_na")]:
        changes[name] = F.when(no_reviews, F.lit(imputed.get(name, 10.0))).otherwise(F.col(name))
        changes[f"{name}_na"] = F.when(no_reviews, F.lit(1.0)).otherwise(F.col(f"{name}_na"))
    return df.withColumns(changes)


# 2026-01-01T00:00:00Z: readings are instants, so the data does not depend on the session time zone.
IOT_START_EPOCH_SECONDS = 1_767_225_600
IOT_SECONDS_BETWEEN_READINGS = 10
# Draw numbers of per-device values, apart from the per-row ones (see _uniform).
_DEVICE_DRAWS = 1000


def generate_iot(spark, n_rows: int, seed: int = DEFAULT_SEED, n_devices: int = DEFAULT_N_DEVICES,
                 n_partitions: int | None = None):
    """Device sensor readings, ``n_rows`` rows over ``n_devices`` devices, deterministic in ``seed``.

    Columns (``IOT_COLUMNS``): device_id ("device-000" to "device-035" for 36 devices, each row's device
    drawn uniformly), reading_time (2026-01-01 UTC plus 10 s per row id), temperature (deg C), humidity (%), pressure (hPa), vibration (mm/s) and the label power (kW)::

        power = max(0, base_d + a_d * (temperature - 20) + b_d * vibration^2
                       + 0.1 * (humidity - 50) + N(0, 2))

    base_d in [50, 150], a_d in [-2, 4] (heaters draw less when it is warm, coolers more) and b_d in
    [0.5, 4] are hashed from (seed, device index); sensor means differ per device too and pressure has
    no effect. The slopes differ in sign and size per device, so a model per device (the book's
    ``groupBy("device_id").applyInPandas``) beats one global model: with device_id as a category a
    global model learns base_d but not the per-device slopes unless it learns every interaction.
    """
    from pyspark.sql import functions as F

    _check_n_rows(n_rows)
    check_n_devices(n_devices)
    parts = n_partitions or _default_partitions(n_rows)
    u, z = (lambda d: _uniform(seed, d)), (lambda d: _normal(seed, d))

    def device_uniform(draw: int, low: float, high: float):
        return low + (high - low) * _uniform(seed, _DEVICE_DRAWS + draw, key="device_index")

    digits = max(3, len(str(n_devices - 1)))
    seconds = F.col("id") * IOT_SECONDS_BETWEEN_READINGS
    df = spark.range(0, n_rows, 1, parts).select(
        "id",
        F.floor(u(1) * n_devices).cast("long").alias("device_index"),
        F.timestamp_seconds(F.lit(IOT_START_EPOCH_SECONDS) + seconds).alias("reading_time"),
        F.sin(2.0 * math.pi * F.pmod(seconds, F.lit(86_400)) / 86_400.0).alias("daily_cycle"),
    )
    df = df.withColumns({
        "device_id": F.format_string(f"device-%0{digits}d", F.col("device_index")),
        "temperature": _clip(device_uniform(1, 10, 30) + 4.0 * F.col("daily_cycle") + 3.0 * z(2), -20, 60),
        "humidity": _clip(device_uniform(2, 30, 70) - 5.0 * F.col("daily_cycle") + 8.0 * z(4), 5, 100),
        "pressure": _clip(1013.0 + device_uniform(3, -10, 10) + 6.0 * z(6), 950, 1060),
        # Positive and right-skewed like an RMS velocity, up to the end of a typical sensor's range.
        "vibration": _clip(device_uniform(4, 0.5, 3.0) * F.exp(0.4 * z(8)), 0, 25),
    })
    power = (device_uniform(5, 50, 150)
             + device_uniform(6, -2, 4) * (F.col("temperature") - 20.0)
             + device_uniform(7, 0.5, 4) * F.pow(F.col("vibration"), 2)
             + 0.1 * (F.col("humidity") - 50.0)
             + 2.0 * z(10))
    # Power cannot be negative; the floor is rarely reached with these ranges.
    df = df.withColumn("power", F.greatest(power, F.lit(0.0)))
    return df.select(*[F.col(name).cast(spark_type).alias(name) for name, spark_type in IOT_COLUMNS])


def data_cache_dir() -> Path:
    """Where generated default data is cached: data/generated (git-ignored) or $SPARKMLOPS_DATA_CACHE."""
    return Path(os.environ.get("SPARKMLOPS_DATA_CACHE") or PROJECT_ROOT / "data" / "generated")


def default_data_path(n_rows: int = DEFAULT_N_ROWS, seed: int = DEFAULT_SEED) -> Path:
    return data_cache_dir() / f"sf-airbnb-synthetic-v{GENERATOR_VERSION}-n{n_rows}-seed{seed}.parquet"


def ensure_default_data(spark, n_rows: int = DEFAULT_N_ROWS, seed: int = DEFAULT_SEED) -> str:
    """Path of the embedded default dataset, generated on first use and cached (git-ignored)."""
    from sparkmlops.io import write_parquet_atomically

    path = default_data_path(n_rows, seed)
    if not (path / "_SUCCESS").exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_parquet_atomically(generate_airbnb(spark, n_rows, seed, n_partitions=1), str(path),
                                 mode="keep_existing")
    return str(path)


# ----------------------------------------------------------------------------------------------
# Validation of a training frame

NUMERIC_TYPES = ("double", "float", "int", "bigint", "smallint", "tinyint")


@dataclass(frozen=True)
class FeatureSpec:
    """Which columns feed the model: strings are indexed, numerics assembled as they are."""

    label_col: str
    categorical_cols: list[str]
    numeric_cols: list[str]
    ignored_cols: list[str]

    @property
    def feature_cols(self) -> list[str]:
        return self.categorical_cols + self.numeric_cols


def infer_feature_spec(df, label_col: str) -> FeatureSpec:
    """Check the label and find the features from the schema alone (no Spark job)."""
    dtypes = dict(df.dtypes)
    if label_col not in dtypes:
        raise UserInputError(f"label column '{label_col}' is not in the data (columns: "
                             f"{', '.join(list(dtypes)[:40])}): pass -P label_col=<numeric column>.")
    if not (dtypes[label_col] in NUMERIC_TYPES or dtypes[label_col].startswith("decimal")):
        raise UserInputError(f"label column '{label_col}' is {dtypes[label_col]}, not numeric: "
                             "pass -P label_col=<numeric column> or cast it in the data.")
    categorical = [c for c, t in df.dtypes if t == "string" and c != label_col]
    numeric = [c for c, t in df.dtypes if c != label_col and (t in NUMERIC_TYPES or t.startswith("decimal"))]
    ignored = [c for c, _ in df.dtypes if c != label_col and c not in categorical and c not in numeric]
    check_known_column_types(dtypes)
    if not categorical and not numeric:
        raise UserInputError(f"no feature columns: besides the label '{label_col}' the data needs string or "
                             f"numeric columns (ignored: {', '.join(ignored) or 'none'}).")
    return FeatureSpec(label_col, categorical, numeric, ignored)


def _is_numeric(spark_type: str) -> bool:
    return spark_type in NUMERIC_TYPES or spark_type.startswith("decimal")


def check_known_column_types(dtypes: dict[str, str]) -> None:
    """Columns named as in the SF Airbnb or IoT schema must have its kind (number or string): a number
    stored as text would silently become a category, a category stored as a number a measurement."""
    expected = {name: kind for name, kind, *_ in AIRBNB_COLUMNS + IOT_COLUMNS}
    wrong = [f"{c} is {t}, expected {expected[c]}" for c, t in dtypes.items() if c in expected
             and expected[c] in ("double", "string") and _is_numeric(t) != (expected[c] == "double")]
    if wrong:
        raise UserInputError(f"columns of the wrong type: {'; '.join(wrong[:5])}: cast them in the data "
                             "(the SF Airbnb schema, see docs/bad-input.md).")


def _non_finite(column: str):
    from pyspark.sql import functions as F

    value = F.col(column).cast("double")
    return F.isnan(value) | (F.abs(value) == F.lit(float("inf")))


def value_aggregates(numeric_cols: list[str], string_cols: list[str] = ()) -> list:
    """Aggregates counting, per numeric column, nulls and NaN/±inf values, and per string column nulls;
    fold them into a pass the caller makes anyway (``value_problems`` reads the result)."""
    from pyspark.sql import functions as F

    aggregates = [F.count(F.lit(1)).alias("__rows")]
    for c in numeric_cols:
        aggregates += [F.sum(F.col(c).isNull().cast("long")).alias(f"null::{c}"),
                       F.sum(F.coalesce(_non_finite(c), F.lit(False)).cast("long")).alias(f"nonfinite::{c}")]
    aggregates += [F.sum(F.col(c).isNull().cast("long")).alias(f"null::{c}") for c in string_cols]
    return aggregates


def value_problems(row: dict, numeric_cols: list[str], string_cols: list[str] = ()) -> dict[str, dict]:
    """{"nulls": {col: n}, "non_finite": {col: n}, "all_null": [string cols null in every row]}."""
    rows = row["__rows"]
    return {
        "nulls": {c: row[f"null::{c}"] for c in numeric_cols if row[f"null::{c}"]},
        "non_finite": {c: row[f"nonfinite::{c}"] for c in numeric_cols if row[f"nonfinite::{c}"]},
        "all_null": [c for c in string_cols if rows and row[f"null::{c}"] == rows],
    }


def describe_value_problems(problems: dict, what: str) -> str:
    """One line for ``value_problems``' numeric findings, or "" when there are none."""
    parts = []
    if problems["nulls"]:
        parts.append("nulls in " + ", ".join(f"{c} ({n} rows)" for c, n in sorted(problems["nulls"].items())))
    if problems["non_finite"]:
        parts.append("NaN or infinite values in " + ", ".join(f"{c} ({n} rows)"
                                                               for c, n in sorted(problems["non_finite"].items())))
    if not parts:
        return ""
    return (f"{what} has {' and '.join(parts)}: impute them (as the book's cleaned data does, with *_na flags) "
            "or drop those rows.")


def check_feature_values(df, numeric_cols: list[str], what: str = "input") -> None:
    """One pass: refuse nulls, NaN and ±inf in the numeric features a model needs (Spark's
    VectorAssembler fails on them mid-job, and a tree would split on infinities)."""
    if not numeric_cols:
        return
    row = df.agg(*value_aggregates(numeric_cols)).first().asDict()
    message = describe_value_problems(value_problems(row, numeric_cols), what)
    if message:
        raise UserInputError(message)


def profile_for_training(df, spec: FeatureSpec) -> dict:
    """One pass over the data: rows, null labels, label minimum, nulls and NaN/inf per numeric feature,
    nulls per string feature, digest."""
    from pyspark.sql import functions as F

    aggregates = [F.count(F.col(spec.label_col)).alias("__label_non_null"),
                  F.min(F.col(spec.label_col)).alias("__label_min"),
                  F.sum(F.coalesce(_non_finite(spec.label_col), F.lit(False)).cast("long")).alias("__label_nonfinite")]
    aggregates += value_aggregates(spec.numeric_cols, spec.categorical_cols)
    row = df.agg(*_digest_aggregates(df), *aggregates).first().asDict()
    problems = value_problems(row, spec.numeric_cols, spec.categorical_cols)
    return {
        "rows": row["__n"],
        "null_labels": row["__n"] - row["__label_non_null"],
        "non_finite_labels": row["__label_nonfinite"],
        "label_min": row["__label_min"],
        "numeric_nulls": problems["nulls"],
        "non_finite": problems["non_finite"],
        "all_null_strings": problems["all_null"],
        "digest": _digest_from(df, row),
    }


def _digest_aggregates(df) -> list:
    from pyspark.sql import functions as F

    row_hash = F.xxhash64(*[F.col(c) for c in df.columns])
    # Two independent 64-bit sums: a wrapped sum of hashes is order-free but weak alone.
    return [F.count(F.lit(1)).alias("__n"),
            F.sum(row_hash.cast("decimal(38,0)")).alias("__s1"),
            F.sum(F.xxhash64(row_hash, F.lit(7)).cast("decimal(38,0)")).alias("__s2")]


def _digest_from(df, row) -> str:
    import hashlib

    payload = f"{df.schema.simpleString()}|{row['__n']}|{row['__s1']}|{row['__s2']}"
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def digest_and_count(df) -> tuple[str, int]:
    """Order-independent digest of a DataFrame's schema and rows, and its row count, in one Spark pass.

    MLflow's own SparkDataset digest hashes the query plan, so it does not change when the files under
    a path change; this one does.
    """
    row = df.agg(*_digest_aggregates(df)).first()
    return _digest_from(df, row), row["__n"]


def content_digest(df) -> str:
    return digest_and_count(df)[0]
