"""The deterministic generators of the embedded default data.

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
from pathlib import Path

from sparkmlops.core.environment import PROJECT_ROOT
from sparkmlops.core.errors import UserInputError
from sparkmlops.data.schema import _NA_FLAGS, AIRBNB_COLUMNS, IOT_COLUMNS
from sparkmlops.data.writing import write_parquet_atomically

# Bump when the generator's output changes, so cached default data is regenerated.
GENERATOR_VERSION = 1


DEFAULT_N_ROWS = 7146


DEFAULT_SEED = 42


DEFAULT_N_DEVICES = 36


MAX_DEVICES = 100_000


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


def default_data_identity(n_rows: int = DEFAULT_N_ROWS, seed: int = DEFAULT_SEED) -> str:
    """What the embedded default data is, without generating it: the generator is deterministic, so its
    version, size and seed are its identity."""
    return f"generated-v{GENERATOR_VERSION}-n{n_rows}-seed{seed}"


def ensure_default_data(spark, n_rows: int = DEFAULT_N_ROWS, seed: int = DEFAULT_SEED) -> str:
    """Path of the embedded default dataset, generated on first use and cached (git-ignored)."""

    path = default_data_path(n_rows, seed)
    if not (path / "_SUCCESS").exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_parquet_atomically(generate_airbnb(spark, n_rows, seed, n_partitions=1), str(path),
                                 mode="keep_existing")
    return str(path)
