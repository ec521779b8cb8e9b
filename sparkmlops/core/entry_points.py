"""An entry point, declared once, in the module that holds its logic: its parameters, its run name, what
Spark it needs, its job and the line it prints.

The parameters are the fields of the entry point's own parameter dataclass (the one its job receives),
each made with ``param``: name, type (the annotation), default, help and choices in one place. From the
declaration come the script's click command (core.cli.command), its MLproject entry and its section of
docs/parameters.md (tools/declarations.py writes both; tests fail while they differ), and its run
(core.jobs.run_entry_point). Every entry point also takes ``spark_master``, which the run consumes.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from sparkmlops.core import choices as choice_tables


def param(default, help: str = "", *, choices: Mapping[str, str] | None = None, required: bool = False):
    """A parameter of an entry point: a dataclass field whose metadata says what the option says.

    ``help`` may hold ``{choices}``, replaced by the choices and their meanings; without it they are added at
    the end. ``required``: ``mlflow run`` demands a value (MLproject gives no default); the script's own
    default stays empty, so that its checks say what is missing.
    """
    return dataclasses.field(default=default, metadata={"help": help, "choices": choices, "required": required})


# MLflow's parameter types for the Python ones; MLflow has no boolean: flags are strings click parses.
_MLPROJECT_TYPES = {str: "string", int: "int", float: "float", bool: "string"}


@dataclass(frozen=True)
class Parameter:
    name: str
    type: type
    default: object
    help_text: str
    choices: Mapping[str, str] | None = None
    required: bool = False

    @property
    def help(self) -> str:
        if not self.choices:
            return self.help_text
        described = choice_tables.describe(self.choices)
        if "{choices}" in self.help_text:
            return self.help_text.format(choices=described)
        return f"{self.help_text} {described}.".strip()

    @property
    def mlproject_type(self) -> str:
        return _MLPROJECT_TYPES[self.type]

    @property
    def mlproject_default(self):
        """The default as MLproject declares it (booleans as the strings click parses); None if required."""
        if self.required:
            return None
        return str(self.default).lower() if self.type is bool else self.default


def parameters_of(params_class) -> list[Parameter]:
    """The declared parameters of a parameter dataclass, in field order."""
    hints = typing.get_type_hints(params_class)
    return [
        Parameter(
            f.name,
            hints[f.name],
            f.default,
            f.metadata.get("help", ""),
            f.metadata.get("choices"),
            f.metadata.get("required", False),
        )
        for f in dataclasses.fields(params_class)
        if "help" in f.metadata
    ]


SPARK_MASTER = Parameter(
    "spark_master",
    str,
    "",
    "Spark master URL (local[N], spark://host:7077, sc://host:15002 for Spark Connect, ...); empty = from the "
    "environment (SPARK_REMOTE, PYSPARK_SUBMIT_ARGS, spark-defaults.conf), else local[*].",
)


def _always(checked) -> bool:
    return True


@dataclass(frozen=True)
class EntryPoint:
    """Everything the project says about one entry point.

    ``job(spark, params, checked)`` runs it, ``checked`` being what ``params.validate()`` returned (before
    Spark started); ``spark`` is None when ``needs_spark(checked)`` is false. ``run_name(params)`` names its
    run in the UI; ``report(params, result)`` is the line the script prints on success (None: nothing).
    ``needs_spark_context`` says why it needs a classic SparkContext, which Spark Connect does not give.
    """

    name: str
    script: str
    summary: str
    params: type
    job: Callable
    run_name: Callable
    report: Callable = lambda params, result: None
    needs_spark_context: str = ""
    needs_spark: Callable = _always

    def parameters(self) -> list[Parameter]:
        return [*parameters_of(self.params), SPARK_MASTER]
