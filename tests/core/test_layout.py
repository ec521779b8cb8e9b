"""The package's layout rules: imports flow one way with no cycles, entry point X's logic is in
sparkmlops/<capability>/X.py, imports of the package are made at module level, and private MLflow and
PySpark symbols appear only in core/compat.py, each still importable."""

import ast
import importlib
import inspect
import re
import subprocess
import sys
from pathlib import Path

from conftest import PROJECT_ROOT

from sparkmlops.core import compat
from sparkmlops.entry_points import ENTRY_POINTS

PACKAGE = PROJECT_ROOT / "sparkmlops"
# Shipped inside every exported model, so it imports nothing of the package and talks to MLflow itself.
SELF_CONTAINED = {PACKAGE / "serve" / "onnx_pyfunc.py"}


def _modules():
    return sorted(PACKAGE.rglob("*.py"))


def test_import_contracts_hold():
    """.importlinter: capabilities -> inference, fitting -> data -> core, capabilities independent, no cycles."""
    lint_imports = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run(
        [str(lint_imports), "--no-cache"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "2 kept, 0 broken" in result.stdout


def test_each_entry_points_logic_is_in_the_module_named_after_it():
    """Entry point X is declared, with its job, in sparkmlops/<folder>/X.py, which its script imports."""
    for entry_point in ENTRY_POINTS:
        modules = list(PACKAGE.glob(f"*/{entry_point.name}.py"))
        assert len(modules) == 1, (entry_point.name, modules)
        dotted = ".".join(modules[0].relative_to(PROJECT_ROOT).with_suffix("").parts)
        assert entry_point in vars(importlib.import_module(dotted)).values(), (entry_point.name, dotted)
        script = (PROJECT_ROOT / entry_point.script).read_text()
        assert f"from {dotted} import" in script, (entry_point.name, dotted)


def test_the_package_is_imported_at_module_level():
    """Function-level imports of the package hide import cycles; none are left (heavy third-party
    imports, made only when used, are a different matter)."""
    inner = []
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.col_offset and (node.module or "").startswith("sparkmlops"):
                inner.append(f"{path.relative_to(PROJECT_ROOT)}:{node.lineno}")
    assert not inner, inner


def test_mlflow_is_called_only_through_the_mlflow_layer():
    allowed = (
        {PACKAGE / "core" / name for name in ("tracking.py", "mlflow_models.py", "model_registry.py", "compat.py")}
        | {PACKAGE / "tune" / "optuna_study.py"}  # MLflow's Optuna integration, tune_optuna's own
        | SELF_CONTAINED
    )
    direct = [
        f"{path.relative_to(PROJECT_ROOT)}:{number}"
        for path in _modules()
        if path not in allowed
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if re.match(r"\s*(import mlflow|from mlflow)", line)
    ]
    assert not direct, direct


# py4j handles of a Spark object (not the project's own self._jvm), and any mlflow./pyspark._private name.
PRIVATE_USE = re.compile(
    r"(?<!self)\._j(vm|sc|df|sparkSession)\b|\b_parse_datatype_string\b|\b_SPARK_MODEL_PATH_SUB\b"
    r"|\b_save_model_metadata\b|\b(mlflow|pyspark)(\.\w+)*\._(?!_)\w+"
)


def test_private_mlflow_and_pyspark_symbols_only_in_compat():
    places = [p for folder in ("sparkmlops", "tests", "bench", "tools") for p in (PROJECT_ROOT / folder).rglob("*.py")]
    places += list(PROJECT_ROOT.glob("*.py"))
    used = [
        f"{path.relative_to(PROJECT_ROOT)}:{number}: {line.strip()}"
        for path in places
        if path != PACKAGE / "core" / "compat.py" and path != Path(__file__)
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if PRIVATE_USE.search(line)
    ]
    assert not used, used


def test_every_private_symbol_still_exists():
    """What a version bump breaks first: each private name compat relies on, resolved on the pins."""
    for module_name, attribute in compat.PRIVATE_SYMBOLS:
        target = importlib.import_module(module_name)
        for part in attribute.split("."):
            if isinstance(target, type) and not hasattr(target, part):
                # an instance attribute (SparkContext._jsc): set by the class itself
                assert f"self.{part} =" in inspect.getsource(target), (module_name, attribute)
                break
            target = getattr(target, part)


def test_executors_get_the_whole_package_and_no_tools(tmp_path):
    """What addPyFile ships: every module of every folder (a cluster's executors have no other copy),
    and not the cluster launcher, which is a developer tool."""
    import zipfile

    from sparkmlops.core.spark import package_archive

    shipped = set(zipfile.ZipFile(package_archive(tmp_path)).namelist())
    assert shipped == {str(path.relative_to(PROJECT_ROOT)) for path in _modules()}
    assert "sparkmlops/inference/pandas_predict.py" in shipped and not any("local_cluster" in n for n in shipped)
