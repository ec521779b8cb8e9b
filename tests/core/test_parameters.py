"""Each entry point declared once (sparkmlops/entry_points.py): MLproject and docs/parameters.md are the
ones its declarations make, each script's command is its declaration's, and what MLflow renders from
MLproject is what the scripts accept."""

import re

import yaml
from conftest import PROJECT_ROOT

from sparkmlops.core import compat
from sparkmlops.entry_points import ENTRY_POINTS, MAIN
from tools import declarations

DECLARED = {entry_point.name: entry_point for entry_point in ENTRY_POINTS}


def _script_main(script: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"script_{script[:-3]}", PROJECT_ROOT / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_mlproject_is_generated_from_the_declarations():
    assert (PROJECT_ROOT / "MLproject").read_text() == declarations.render_mlproject(), (
        "run: python -m tools.declarations"
    )


def test_the_parameter_reference_is_generated_from_the_declarations():
    assert declarations.PARAMETERS_DOC.read_text() == declarations.render_parameters_doc(), (
        "run: python -m tools.declarations"
    )


def test_every_script_runs_its_declaration():
    """One script per entry point, whose click command has the declaration's options, defaults and help
    (and nothing else): `python <script>.py --help` is the declaration."""
    scripts = sorted(p.name for p in PROJECT_ROOT.glob("*.py"))
    assert scripts == sorted(entry_point.script for entry_point in ENTRY_POINTS)
    for entry_point in ENTRY_POINTS:
        command = _script_main(entry_point.script)
        assert command.name == entry_point.name and command.help == entry_point.summary
        options = [(o.name, o.type.name, o.default, o.help) for o in command.params]
        assert options == [(p.name, o_type(p.type), p.default, p.help) for p in entry_point.parameters()]


def o_type(python_type) -> str:
    return {str: "text", int: "integer", float: "float", bool: "boolean"}[python_type]


def test_every_entry_point_command_parses_with_its_script(tmp_path):
    """MLflow's own reading of MLproject (defaults, required values, an empty string) renders a command
    the script accepts, with every parameter: what `mlflow run -e <entry>` will execute."""
    import shlex

    project = compat.load_mlflow_project(str(PROJECT_ROOT))
    assert set(yaml.safe_load((PROJECT_ROOT / "MLproject").read_text())["entry_points"]) == {*DECLARED, "main"}
    for name in [*DECLARED, "main"]:
        entry_point = project.get_entry_point(name)
        declared = DECLARED[MAIN.name if name == "main" else name]
        required = {name: f"/x/{name}" for name, p in entry_point.parameters.items() if p.default is None}
        assert set(required) == {p.name for p in declared.parameters() if p.required}, name
        argv = shlex.split(entry_point.compute_command(required, str(tmp_path)))
        assert argv[:2] == ["python", declared.script], name
        context = _script_main(declared.script).make_context(declared.script, argv[2:])
        assert set(context.params) == set(entry_point.parameters), name
        for p in declared.parameters():  # the defaults MLproject gives are the script's (booleans as strings)
            assert context.params[p.name] == required.get(p.name, p.default), (name, p.name)


def test_required_parameters_are_checked_by_the_script():
    """A parameter `mlflow run` demands has an empty default in the script, so `python <script>.py`
    without it fails on the script's own check, not on a None."""
    for entry_point in ENTRY_POINTS:
        for p in entry_point.parameters():
            if p.required:
                assert p.default == "", (entry_point.name, p.name)


def test_every_choice_is_in_the_help_and_the_default_is_one():
    with_choices = [(e.name, p) for e in ENTRY_POINTS for p in e.parameters() if p.choices]
    assert len(with_choices) >= 14  # model_type, engine, metric, method, ... (a lost table would empty this)
    for entry, parameter in with_choices:
        assert all(re.search(rf"\b{re.escape(value)}\b", parameter.help) for value in parameter.choices), (
            entry,
            parameter.help,
        )
        assert parameter.default in parameter.choices, (entry, parameter.name)


def test_the_book_model_types_include_xgboost():
    """The omission that started the choice tables: train's help offers every model_type train accepts."""
    help_text = next(p for p in DECLARED["train"].parameters() if p.name == "model_type").help
    assert "xgboost" in help_text and "gbt" in help_text and "rf" in help_text


def test_train_defaults_are_the_books_model():
    """The book's model is train's default: changing one of these changes what `mlflow run .` trains. (A new
    parameter is not listed here: its default must leave this model as it is, which the book's figures in
    tests/e2e check.)"""
    params = yaml.safe_load((PROJECT_ROOT / "MLproject").read_text())["entry_points"]["train"]["parameters"]
    book = {
        "data_path": "",
        "label_col": "price",
        "model_type": "rf",
        "num_trees": 100,
        "max_depth": 5,
        "max_bins": 40,
        "min_instances_per_node": 1,
        "feature_subset_strategy": "auto",
        "log_label": "false",
        "seed": 42,
        "train_fraction": 0.8,
    }
    assert {k: params[k].get("default") for k in book if k in params} == book


def test_readme_lists_every_entry_point_once():
    readme = (PROJECT_ROOT / "README.md").read_text()
    rows = re.findall(r"^\| \[?`([a-z_]+)`", readme, flags=re.M)
    for entry in DECLARED:
        assert rows.count(entry) == 1, (entry, rows)
    assert "`main` is `train`" in readme


def test_core_holds_no_table_of_entry_points():
    """core/ reads what each declaration says; it names none of them (a table keyed by entry point there
    is a second place to edit, and import contracts cannot see string-keyed dependencies)."""
    core = PROJECT_ROOT / "sparkmlops" / "core"
    named = [
        f"{path.name}:{number}"
        for path in core.glob("*.py")
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"""["']({})["']\s*:""".format("|".join(DECLARED)), line)  # a key of a table
    ]
    assert not named, named
