"""docs/parameters.md's reference is generated from the config classes, and every key is described."""


import yaml
from pydantic import BaseModel

from spt.config import Params
from tests.support import REPO
from tools import params_doc


def test_parameters_doc_is_current():
    assert params_doc.check(REPO / "docs" / "parameters.md", REPO / "params.yaml"), (
        "docs/parameters.md is stale: run python -m tools.params_doc --write and commit it")


def test_check_fails_on_a_stale_doc_and_write_mends_it(tmp_path):
    doc = tmp_path / "parameters.md"
    text = (REPO / "docs" / "parameters.md").read_text(encoding="utf-8")
    doc.write_text(text.replace("| `pretrain_sup.lambda` | `1.0` |", "| `pretrain_sup.lambda` | `2.0` |"))
    assert doc.read_text() != text
    assert params_doc.main(["--check", "--doc", str(doc)]) == 1
    assert params_doc.main(["--write", "--doc", str(doc)]) == 0
    assert doc.read_text() == text  # the hand-written prose around the block is kept
    assert params_doc.main(["--check", "--doc", str(doc)]) == 0


def test_every_params_key_is_in_the_doc_with_a_description():
    rendered = params_doc.render(REPO / "params.yaml")

    def walk(model: type[BaseModel], raw: dict, prefix: str) -> list[str]:
        missing = []
        fields = {field.alias or name: (name, field) for name, field in model.model_fields.items()}
        for key, value in raw.items():
            name, field = fields[key]
            if params_doc.is_section(field):
                if not params_doc.section_doc(field.annotation):
                    missing.append(f"{prefix}{key} (section docstring)")
                missing += walk(field.annotation, value, f"{prefix}{key}.")
                continue
            if not params_doc.description_of(model, name):
                missing.append(prefix + key)
            assert f"| `{prefix}{key}` |" in rendered
        return missing

    raw = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    assert walk(Params, raw, "") == [], "give these fields a Field(description=...) in the config classes"


def test_types_and_bounds_are_read_from_the_annotations():
    fields = Params.model_fields["pretrain_sup"].annotation.model_fields
    assert params_doc.describe_type(fields["warmup_ratio"].annotation, fields["warmup_ratio"].metadata) == \
        "float in [0, 1)"
    assert params_doc.describe_type(fields["max_steps"].annotation, fields["max_steps"].metadata) == \
        "int > 0 or null"
    assert params_doc.describe_type(fields["supervised_input"].annotation) == "`clean` / `masked`"
    assert params_doc.format_value([0.01, None, True]) == "[0.01, null, true]"
