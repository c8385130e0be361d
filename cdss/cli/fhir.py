"""`cdss fhir ...`: the Questionnaire for a rule set, a patient document as a QuestionnaireResponse,
and validation of FHIR resources with fhir.resources (extra `cdss[fhir]`). See docs/FHIR.md.

commands.py registers this group at import time, so this module imports nothing from it at
module level (no import cycle): the shared helpers are imported inside the commands.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

RULES_OPTION = click.option("--rules", "rules_path", type=click.Path(exists=True, path_type=Path), default=None,
                            metavar="DIR", help="Rule set directory (with ruleset.yaml) or one pack file; "
                            "default: the bundled rules.")


def _pretty(resource: Any) -> str:
    return json.dumps(resource, ensure_ascii=False, indent=2)


def _validate(resource: dict[str, Any], what: str) -> None:
    from ..fhir.validate import FhirLibraryMissing, validate_resource
    from .commands import EXIT_PATIENT, EXIT_USAGE, Fail

    try:
        validate_resource(resource)
    except FhirLibraryMissing as error:
        raise Fail(str(error), EXIT_USAGE) from None
    except ValueError as error:  # pydantic's ValidationError: the element and the problem
        lines = [line.strip() for line in str(error).splitlines() if line.strip()][:3]
        raise Fail(f"{what}: not valid FHIR R4: {' / '.join(lines)}", EXIT_PATIENT) from None


@click.group("fhir")
def fhir() -> None:
    """FHIR R4: the Questionnaire to collect a patient's answers, and conversions (docs/FHIR.md).

    `cdss evaluate` reads a QuestionnaireResponse like a patient document, and
    `cdss evaluate --format fhir` writes the result as a GuidanceResponse Bundle.
    """


@fhir.command("questionnaire")
@RULES_OPTION
@click.option("--validate", "check", is_flag=True, help="Also parse it with fhir.resources (needs cdss[fhir]).")
def questionnaire_command(rules_path: Path | None, check: bool) -> None:
    """Write the R4 Questionnaire for the rule set (its url|version is what responses must name)."""
    from ..fhir.questionnaire import questionnaire
    from .commands import load_rule_set

    resource = questionnaire(load_rule_set(rules_path).info)
    if check:
        _validate(resource, "the Questionnaire")
    click.echo(_pretty(resource))


@fhir.command("response")
@click.argument("file", metavar="FILE|-", type=click.Path(exists=True, dir_okay=False, allow_dash=True))
@RULES_OPTION
def response_command(file: str, rules_path: Path | None) -> None:
    """Write a patient document as the completed QuestionnaireResponse that carries it."""
    from ..errors import PatientDataError
    from ..fhir.response import questionnaire_response_from_patient
    from .commands import EXIT_PATIENT, Fail, _read_document, load_rule_set
    from .input import InputProblem, patient_problem

    rules = load_rule_set(rules_path)
    try:
        document = _read_document(file)
        try:
            resource = questionnaire_response_from_patient(document, rules)
        except PatientDataError as error:
            raise patient_problem(error, document) from None
    except InputProblem as problem:
        raise Fail(f"{file}: {problem.message}", EXIT_PATIENT) from None
    click.echo(_pretty(resource))


@fhir.command("validate")
@click.argument("files", nargs=-1, required=True, metavar="FILE|- ...",
                type=click.Path(exists=True, dir_okay=False, allow_dash=True))
def validate_command(files: tuple[str, ...]) -> None:
    """Check FHIR resources (or a Bundle, e.g. from --format fhir) with fhir.resources; exit 1 if any is invalid."""
    from .commands import EXIT_PATIENT, Fail, _read_document
    from .input import InputProblem

    for name in files:
        try:
            resource = _read_document(name)
        except InputProblem as problem:
            raise Fail(f"{name}: {problem.message}", EXIT_PATIENT) from None
        if not isinstance(resource, dict):
            raise Fail(f"{name}: expected a FHIR resource (a JSON object)", EXIT_PATIENT)
        _validate(resource, name)
        click.echo(f"{name}: valid {resource.get('resourceType')}", err=True)
