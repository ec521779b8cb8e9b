"""Every entry point refuses a bad parameter in a process of its own, in seconds and before any JVM starts:
exit 2, one `error:` line, the run FAILED without a spark_master tag, and nothing of Spark's on stderr
(which, in a fresh process, is where a JVM would write).

The other refusal tests run the scripts' commands in the test process, which already has a JVM; this one
is what shows the checks need none. The processes run two at a time (one per core).
"""

from __future__ import annotations

import sys
import time
from concurrent.futures import ThreadPoolExecutor

from conftest import EXPERIMENT, JVM_SIGNS, PROJECT_ROOT, last_line, run_entry

MISSING_RUN = "runs:/0123456789abcdef0123456789abcdef/model"
# entry point -> (script options, the phrase its one line must contain)
REFUSALS = {
    "train": (["--num_trees", "0"], "num_trees must be >= 1"),
    "train_sklearn": (["--max_features", "half"], "max_features 'half' is not valid"),
    "train_per_group": (["--min_rows", "1"], "min_rows must be >= 2"),
    "tune_hyperopt": (["--max_evals", "0"], "max_evals must be >= 1"),
    "tune_optuna": (["--engine", "tpe"], "unknown engine 'tpe'"),
    "tune_grid": (["--cv", "1"], "cv must be >= 2"),
    "generate_data": (["--output_path", "{tmp}/gen", "--dataset", "tpch"], "unknown dataset 'tpch'"),
    "score_batch": (
        ["--model_uri", MISSING_RUN, "--input_path", "{tmp}/nothing", "--output_path", "{tmp}/out"],
        "does not exist",
    ),
    "score_stream": (
        [
            "--model_uri",
            MISSING_RUN,
            "--input_path",
            "{tmp}",
            "--output_path",
            "{tmp}/out",
            "--checkpoint_path",
            "{tmp}/ckpt",
            "--max_files_per_trigger",
            "0",
        ],
        "max_files_per_trigger must be >= 1",
    ),
    "score_pandas_udf": (
        ["--model_uri", MISSING_RUN, "--input_path", "{tmp}", "--output_path", "{tmp}/out", "--method", "apply"],
        "unknown method 'apply'",
    ),
    "score_per_group": (
        ["--run_id", "0123456789abcdef0123456789abcdef", "--input_path", "{tmp}/nothing", "--output_path", "{tmp}/out"],
        "does not exist",
    ),
    "promote": (["--model_name", "a/b"], "cannot contain '/', ':' or '@'"),
    "export_onnx": (["--model_uri", MISSING_RUN], "not found"),
    "check_drift": (["--reference_path", "/nonexistent/ref", "--current_path", "/nonexistent/cur"], "/nonexistent/cur"),
    "reproduce": (["--run_id", ""], "run_id is empty"),
    "pipeline": (["--rerun", "tain"], "rerun names no step: tain"),
}


def test_every_entry_point_refuses_bad_input_in_a_fresh_process_without_a_jvm(client, tmp_path):
    started = time.time()

    def refuse(entry: str):
        options, _ = REFUSALS[entry]
        command = [sys.executable, str(PROJECT_ROOT / f"{entry}.py"), *[o.format(tmp=tmp_path) for o in options]]
        return run_entry(command, timeout=120)

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = dict(zip(REFUSALS, pool.map(refuse, REFUSALS)))

    experiment = client.get_experiment_by_name(EXPERIMENT).experiment_id
    for entry, result in results.items():
        phrase = REFUSALS[entry][1]
        line = last_line(result.stderr)
        assert result.returncode == 2 and line.startswith("error: ") and phrase in line, (entry, result.stderr[-2000:])
        assert not [sign for sign in JVM_SIGNS if sign in result.stderr], (entry, result.stderr[-2000:])
        assert result.seconds < 30, (entry, result.seconds)  # seconds, not a Spark start
        [run] = client.search_runs(
            [experiment],
            filter_string=f"tags.entry_point = '{entry}' and attributes.start_time >= {int(started * 1000)}",
        )
        assert run.info.status == "FAILED" and run.data.tags["exit_code"] == "2", entry
        assert "spark_master" not in run.data.tags and phrase in run.data.tags["error"], entry
