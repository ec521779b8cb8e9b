"""Entry point `generate_data`: write a synthetic SF Airbnb dataset with the real data's exact schema,
or (dataset=iot) device sensor readings for the book's per-device models (label power, group device_id).

    mlflow run . -e generate_data -P output_path=/tmp/airbnb.parquet -P n_rows=10000000 -P n_files=100
    mlflow run . -e generate_data -P dataset=iot -P output_path=/tmp/iot.parquet -P n_rows=100000

Deterministic in `seed`: the same seed gives the same rows, whatever n_files or the cluster.
"""

from sparkmlops.core import cli
from sparkmlops.data.generate_data import GENERATE_DATA

main = cli.command(GENERATE_DATA)

if __name__ == "__main__":
    cli.run(main)
