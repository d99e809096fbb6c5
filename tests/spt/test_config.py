"""params.yaml is loaded into strict typed sections; every problem is reported at once."""

import pytest
import yaml
from pydantic import BaseModel

from spt.config import RENAMED, ConfigError, DataConfig, DeclaredParams, Params, load_params
from tests.support import REPO, default_params, write_params


def test_default_params_load(monkeypatch):
    monkeypatch.chdir(REPO)
    params = load_params(REPO / "params.yaml")
    assert params.data.labeled == "builtin:rotten_tomatoes"
    assert params.pretrain_sup.lambda_ == 1.0
    assert params.finetune.init_from == "pretrain_sup"


def test_every_problem_is_listed_with_its_key(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    data = default_params()
    data["prepare"]["max_lenght"] = 64
    data["prepare"]["val_fraction"] = -0.1
    data["pretrain_sup"]["lambda"] = -1
    data["pretrain_sup"]["lambda_schedule"] = "wild"
    data["finetune"]["batch_size"] = 0
    data["finetune"]["epochs"] = "3"
    with pytest.raises(ConfigError) as raised:
        load_params(write_params(tmp_path, data))
    message = str(raised.value)
    assert "6 problems" in message
    assert "prepare.max_lenght: unknown key; did you mean 'max_length'?" in message
    assert "prepare.val_fraction = -0.1" in message
    assert "pretrain_sup.lambda = -1" in message
    assert "pretrain_sup.lambda_schedule = 'wild'" in message and "cosine_decay" in message
    assert "finetune.batch_size = 0" in message
    assert "finetune.epochs = '3'" in message


def test_unknown_section_and_source_scheme(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    data = default_params()
    data["pretrain"] = {}
    data["data"]["labeled"] = "s3:bucket/imdb"
    data["data"]["unlabeled"] = ["missing.txt", "builtin:wikipedia"]
    data["model"]["source"] = "builtin:bert-large"
    message = str(pytest.raises(ConfigError, load_params, write_params(tmp_path, data)).value)
    assert "pretrain: unknown key" in message
    assert "unknown source scheme 's3:'" in message
    assert "path 'missing.txt' does not exist" in message
    assert "unknown builtin 'wikipedia'" in message
    assert "unknown builtin 'bert-large'" in message


def test_a_renamed_key_names_its_new_name(tmp_path, monkeypatch):
    """A params.yaml written before issue 21's renames is told each key's new name, not difflib's guess; prepare's
    own n_per_class and true_few_shot keep their names."""
    monkeypatch.chdir(REPO)
    data = default_params()
    data["study"]["n_per_class"] = data["study"].pop("labels_per_class")
    data["study"]["true_few_shot"] = data["study"].pop("cap_validation")
    data["floors"]["variants"] = data["floors"].pop("arms")
    message = str(pytest.raises(ConfigError, load_params, write_params(tmp_path, data)).value)
    assert "3 problems" in message
    assert "study.n_per_class: unknown key; renamed to study.labels_per_class" in message
    assert "study.true_few_shot: unknown key; renamed to study.cap_validation" in message
    assert "floors.variants: unknown key; renamed to floors.arms" in message
    assert "prepare." not in message and set(RENAMED.values()) <= _keys(default_params())


@pytest.mark.parametrize("section, values, expected", [
    ("prepare", {"val_fraction": 0.5, "test_fraction": 0.45}, "leaves under 10%"),
    ("prepare", {"true_few_shot": True}, "but n_per_class is null; set n_per_class or true_few_shot: false"),
    ("pretrain_sup", {"lambda": 0.5, "lambda_min": 1.0, "lambda_schedule": "linear_decay"}, "must not exceed"),
    ("model", {"scratch": {"hidden_size": 30, "num_heads": 4}}, "divisible by num_heads"),
    ("floors", {"arms": ["tfidf", "bm25"]}, "floors.arms.1 = 'bm25': Input should be 'tfidf' or 'embeddings'"),
    ("study", {"pretrained_controls": ["baseline"]}, "study.pretrained_controls.0 = 'baseline': Input should be"),
    ("study", {"pretrained_controls": "tapt"}, "study.pretrained_controls = 'tapt': write [tapt] to run the tapt"),
    ("study", {"pretrained_controls": True}, "study.pretrained_controls = True: write [tapt] to run the tapt"),
    ("floors", {"arms": ["tfidf", "tfidf"]}, "values must be distinct"),
])
def test_cross_field_checks(tmp_path, monkeypatch, section, values, expected):
    monkeypatch.chdir(REPO)
    data = default_params()
    for key, value in values.items():
        if isinstance(value, dict):
            data[section][key].update(value)
        else:
            data[section][key] = value
    assert expected in str(pytest.raises(ConfigError, load_params, write_params(tmp_path, data)).value)


def test_missing_or_broken_file(tmp_path):
    assert "file not found" in str(pytest.raises(ConfigError, load_params, tmp_path / "nope.yaml").value)
    broken = tmp_path / "broken.yaml"
    broken.write_text("seed: [1,\n")
    assert "not valid YAML" in str(pytest.raises(ConfigError, load_params, broken).value)


@pytest.mark.parametrize("launch", ["python", "python3.11", "torchrun --standalone --nproc_per_node 2",
                                    "torchrun --nnodes 2 --nproc_per_node 8 --rdzv_endpoint $MASTER_ADDR:29400",
                                    "accelerate launch --config_file fsdp.yaml"])
def test_launchers_accepted(tmp_path, monkeypatch, launch):
    monkeypatch.chdir(REPO)
    data = default_params()
    data["runtime"]["launch"] = launch
    assert load_params(write_params(tmp_path, data)).runtime.launch == launch


@pytest.mark.parametrize("launch, expected", [
    ("", "is empty"),
    ("  ", "is empty"),
    ("python -m", "must not contain -m"),
    ("torchrun --nproc_per_node 2; rm -rf data", "shell character(s) ';'"),
    ("accelerate --config_file fsdp.yaml", "write 'accelerate launch ...'"),
    ("torchrn --nproc_per_node 2", "'torchrn' is neither python, torchrun nor accelerate"),
    ("torchrun 'unclosed", "cannot be split into words"),
])
def test_bad_launchers_are_named(tmp_path, monkeypatch, launch, expected):
    monkeypatch.chdir(REPO)
    data = default_params()
    data["runtime"]["launch"] = launch
    message = str(pytest.raises(ConfigError, load_params, write_params(tmp_path, data)).value)
    assert f"runtime.launch = {launch!r}" in message and expected in message


def _defaults(model: type[BaseModel]) -> dict:
    """Every key of a config class with its default, nested like params.yaml (params.yaml's key names)."""
    values = {}
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            values[field.alias or name] = _defaults(annotation)
        elif not field.is_required():
            values[field.alias or name] = field.get_default(call_default_factory=True)
    return values


def _keys(data: dict, prefix: str = "") -> set[str]:
    keys = set()
    for key, value in data.items():
        keys.add(prefix + key)
        if isinstance(value, dict):
            keys |= _keys(value, prefix + key + ".")
    return keys


def _without(data: dict, key: str) -> dict:
    head, _, rest = key.partition(".")
    return {k: (_without(v, rest) if k == head and rest else v) for k, v in data.items() if rest or k != head}


def test_params_yaml_is_the_one_source_of_defaults():
    """The config classes' defaults are params.yaml's values, key for key (one default per value); the one
    key without a default is data.labeled: which data to learn from is never guessed."""
    assert _defaults(Params) == _without(default_params(), "data.labeled")
    assert Params.model_fields["data"].is_required() and DataConfig.model_fields["labeled"].is_required()


def test_tiny_profile_sets_every_key():
    tiny = yaml.safe_load((REPO / "tests" / "tiny_params.yaml").read_text())
    assert _keys(tiny) == _keys(default_params())


def test_a_stage_reads_only_what_dvc_yaml_declares(monkeypatch):
    monkeypatch.chdir(REPO)
    declared = ["seed", "runtime", "evaluate", "pretrain_sup.max_steps"]
    full = load_params(REPO / "params.yaml")
    params = DeclaredParams(full, declared, "evaluate")
    assert params.evaluate.batch_size == full.evaluate.batch_size and params.seed == full.seed
    assert params.tracking.experiment == full.tracking.experiment  # where runs are logged changes no output
    assert params.pretrain_sup.max_steps == full.pretrain_sup.max_steps
    with pytest.raises(AttributeError, match="reads params 'finetune', which dvc.yaml stage 'evaluate' does not "
                                             "declare.*add 'finetune' to that stage's params in dvc.yaml"):
        _ = params.finetune
    with pytest.raises(AttributeError, match="'pretrain_sup.batch_size'"):
        _ = params.pretrain_sup.batch_size
    assert params.declared() == {"seed": full.seed, "runtime": full.runtime.model_dump(),
                                 "evaluate": full.evaluate.model_dump(),
                                 "pretrain_sup.max_steps": full.pretrain_sup.max_steps}


# The sweep (study.weightings x study.lambdas) and the label-budget curve: every problem named with its key
# and how to fix it
@pytest.mark.parametrize("study, expected", [
    ({"weightings": ["fixed"], "lambdas": [0.5, 0.5]}, "study.lambdas = [0.5, 0.5]: values must be distinct"),
    ({"weightings": ["fixed"], "lambdas": [1, 1.0]}, "values must be distinct"),  # one lambda, two spellings
    ({"weightings": ["fixed", "fixed"], "lambdas": [1]}, "study.weightings = ['fixed', 'fixed']: values must be"),
    ({"weightings": ["fixed"], "lambdas": [0, -1]}, "study.lambdas = [0, -1]: 0, -1 are not a positive number"),
    ({"weightings": ["fixed"], "lambdas": [True, "2", float("inf")]}, "True, '2', inf are not a positive number"),
    ({"weightings": ["fixed", "softmax"], "lambdas": [1]}, "study.weightings.1 = 'softmax': Input should be 'fixed', "
                                                           "'normalized', 'uncertainty' or 'gradcos'"),
    ({"lambdas": [0.3, 1, 3]}, "study.lambdas = [0.3, 1, 3] but study.weightings is empty"),
    ({"weightings": ["fixed", "gradcos"]}, "study.weightings = ['fixed', 'gradcos'] but study.lambdas is empty"),
    # the labels-per-class curve (study.labels_per_class, tests/study/test_curve.py)
    ({"labels_per_class": [8, None]}, "null (the full training set) is always the curve's last point"),
    ({"labels_per_class": [8, 8]}, "study.labels_per_class = [8, 8]: values must be distinct"),
    ({"labels_per_class": [0, 8]}, "study.labels_per_class.0 = 0: Input should be greater than 0"),
    ({"cap_validation": "yes please"}, "study.cap_validation"),
    ({"labeled_share": 0}, "study.labeled_share = 0: Input should be greater than 0"),
    ({"labeled_share": 1.5}, "study.labeled_share = 1.5: Input should be less than or equal to 1"),
])
def test_study_problems_are_named(tmp_path, monkeypatch, study, expected):
    monkeypatch.chdir(REPO)
    data = default_params()
    data["study"].update(study)
    message = str(pytest.raises(ConfigError, load_params, write_params(tmp_path, data)).value)
    assert expected in message and "problem:" in message


def test_one_sweep_axis_alone_says_how_to_sweep_it(tmp_path, monkeypatch):
    """A DVC matrix with an empty axis has no stages: a lone axis would sweep nothing, silently."""
    monkeypatch.chdir(REPO)
    data = default_params()
    data["study"]["lambdas"] = [0.3, 1, 3]
    message = str(pytest.raises(ConfigError, load_params, write_params(tmp_path, data)).value)
    assert "nothing would be swept" in message and "-S 'study.weightings=[normalized]'" in message
    data["study"].update(lambdas=[], weightings=["fixed", "gradcos"])
    data["pretrain_sup"]["lambda"] = 2.0
    assert "-S 'study.lambdas=[2]'" in str(pytest.raises(ConfigError, load_params, write_params(tmp_path, data)).value)
    data["study"]["lambdas"] = [0.3, 1, 3]  # both axes: fine
    params = load_params(write_params(tmp_path, data))
    assert params.study.lambdas == [0.3, 1, 3] and [type(v) for v in params.study.lambdas] == [float, int, int]


def test_a_decaying_lambda_must_stay_above_lambda_min(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    data = default_params()
    data["study"].update(weightings=["fixed"], lambdas=[0.05, 0.5, 0.01])
    data["pretrain_sup"].update(lambda_schedule="linear_decay", lambda_min=0.1)
    message = str(pytest.raises(ConfigError, load_params, write_params(tmp_path, data)).value)
    assert "study.lambdas = [0.05, 0.5, 0.01]: 0.05, 0.01 are below pretrain_sup.lambda_min (0.1)" in message
    data["pretrain_sup"]["lambda_schedule"] = "constant"  # lambda_min unused
    assert load_params(write_params(tmp_path, data)).study.lambdas == [0.05, 0.5, 0.01]


def test_a_setting_replaces_weighting_and_lambda_only():
    from spt.config import PretrainSupConfig, section_dict

    own = PretrainSupConfig(lambda_schedule="linear_decay", lambda_min=0.2)
    swept = own.swept("gradcos", 3)
    assert section_dict(swept) == {**section_dict(own), "weighting": "gradcos", "lambda": 3.0}
    assert own.swept(own.weighting, 1) == own  # pretrain_sup's own setting: the same section (same fingerprint)
    with pytest.raises(ConfigError, match=r"--weighting fixed --lambda 0.1 with params.yaml's pretrain_sup: "
                                          r"lambda_min \(0.2\) must not exceed lambda \(0.1\)"):
        own.swept("fixed", 0.1)
