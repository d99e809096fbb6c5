"""Typed, strict configuration loaded from ``params.yaml``.

Every section of ``params.yaml`` maps to one class below; the dvc.yaml stage, its params section,
its module ``stages/<name>.py`` and its config class share one name. Loading validates the whole
file at once and raises :class:`ConfigError` listing every problem with its key, so a typo in
``pretrain_sup`` is reported before ``prepare`` spends any compute.
"""

from __future__ import annotations

import difflib
import math
import re
import shlex
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from spt.data.grammar import (
    BUILTIN_DATA,
    BUILTIN_MODELS,
    HUB_DATASET_SYNTAX,
    HUB_ID,
    check_source,
    parse_hub_dataset,
    unknown_builtin,
)
from spt.errors import UserError

# runtime.launch: the launchers stages.launch starts the training stages with (see check_launcher).
LAUNCHERS = ("python", "torchrun", "accelerate")
_PYTHON = re.compile(r"^python3(\.\d+)?$")
SHELL_OPERATORS = set(";&|<>`()\n\r")  # $VAR stays allowed (multi-node flags): stages.launch expands it

PositiveInt = Annotated[int, Field(gt=0)]
ScratchArchitecture = Literal["bert", "roberta", "xlm-roberta", "deberta-v2", "electra", "distilbert", "modernbert"]
Fraction = Annotated[float, Field(gt=0, lt=1)]
# pretrain_sup.weighting: how L_mlm and L_supervised are weighed (spt/train/losses.py); study.weightings sweeps it
Weighting = Literal["fixed", "normalized", "uncertainty", "gradcos"]
WEIGHTINGS: tuple[str, ...] = get_args(Weighting)
# keys renamed since (issue 21), so an old params.yaml or `dvc exp run -S` flag is told the new name, not a guess
RENAMED = {"study.n_per_class": "study.labels_per_class", "study.true_few_shot": "study.cap_validation",
           "floors.variants": "floors.arms"}


class ConfigError(UserError):
    """Raised when params.yaml is missing, unreadable or invalid; the message lists every problem."""


class Section(BaseModel):
    """Base of every section: unknown keys and silent type coercion are errors."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, populate_by_name=True)


class DataConfig(Section):
    """Where the labeled task and the masked-LM text come from."""

    labeled: str = Field(  # required: which data to learn from is never guessed
        description="builtin:rotten_tomatoes, builtin:bbc_news, a Hugging Face dataset "
        f"({HUB_DATASET_SYNTAX}), or a path to a CSV/TSV/JSONL/Parquet file or a datasets save_to_disk directory"
    )
    test: str | None = Field(
        None, description="the test set as given, e.g. a dataset's official one: the name of a split of "
        "data.labeled (a Hub dataset or a save_to_disk DatasetDict), or a file / directory like data.labeled; "
        "prepare then splits only validation from the rest. null: the test split is drawn from data.labeled")
    text_column: str = Field("text", description="column holding the text in labeled/unlabeled files")
    label_column: str = Field("label", description="column holding the label in the labeled file")
    labels: list[str] | None = Field(
        None, description="labels to keep (others are dropped and counted); null keeps every value"
    )
    unlabeled: list[str] = Field(
        default_factory=lambda: ["builtin:rotten_tomatoes", "builtin:bbc_news"],
        description="extra masked-LM sources: builtins, hf: datasets and/or .txt/.jsonl/.csv/.tsv/.parquet paths; "
        "the labeled train texts are always added",
    )

    @field_validator("labeled")
    @classmethod
    def _labeled_source(cls, value: str) -> str:
        check_source(value, BUILTIN_DATA)
        return value

    @model_validator(mode="after")
    def _test_source(self) -> DataConfig:
        if self.test is None or Path(self.test).exists():
            return self
        if not re.fullmatch(r"[\w.-]+", self.test):
            raise ValueError(f"test = '{self.test}' is neither an existing file or directory nor a split name like "
                             "'test'")
        labeled_dir = Path(self.labeled)
        if not (self.labeled.startswith("hf:") or labeled_dir.is_dir()):
            raise ValueError(f"test = '{self.test}' names a split, but labeled = '{self.labeled}' has no splits; "
                             "use a Hub dataset (hf:...) or a save_to_disk DatasetDict as data.labeled, or give "
                             "data.test as a file")
        if self.labeled.startswith("hf:") and parse_hub_dataset(self.labeled).split:
            raise ValueError(f"test = '{self.test}' names a split, but labeled = '{self.labeled}' selects one split; "
                             "drop the split from data.labeled so the other splits are read")
        return self

    @field_validator("unlabeled")
    @classmethod
    def _unlabeled_sources(cls, values: list[str]) -> list[str]:
        problems = []
        for value in values:
            try:
                check_source(value, BUILTIN_DATA)
            except ValueError as err:
                problems.append(str(err))
        if problems:
            raise ValueError("; ".join(problems))
        return values

    @field_validator("labels")
    @classmethod
    def _labels(cls, values: list[str] | None) -> list[str] | None:
        if values is not None and len(set(values)) < 2:
            raise ValueError(f"needs at least two distinct labels, got {values}")
        return values


class ScratchConfig(Section):
    """Architecture and sizes of an encoder built from scratch when ``model.source`` is ``scratch``."""

    architecture: ScratchArchitecture = Field(
        "bert", description="the model_type; prepare trains the tokenizer kind it has (WordPiece for bert, electra "
        "and distilbert; byte-level BPE for roberta and modernbert; SentencePiece-style for xlm-roberta, deberta-v2)")
    vocab_size: Annotated[int, Field(ge=100)] = Field(8000, description="size of the tokenizer prepare trains")
    hidden_size: PositiveInt = Field(256, description="hidden size of the encoder (a multiple of num_heads)")
    num_layers: PositiveInt = Field(4, description="transformer layers")
    num_heads: PositiveInt = Field(4, description="attention heads per layer")
    intermediate_size: PositiveInt = Field(1024, description="feed-forward size of each layer")

    @model_validator(mode="after")
    def _heads_divide_hidden(self) -> ScratchConfig:
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by num_heads ({self.num_heads})"
            )
        return self


class ModelConfig(Section):
    """Which encoder to start from."""

    source: str = Field(
        "builtin:all-minilm-l6-v2",
        description="scratch, builtin:all-minilm-l6-v2, a local Hugging Face model directory, or a Hub id: an "
        "encoder with a masked-LM and a sequence-classification class in transformers (bert, roberta, xlm-roberta, "
        "deberta-v2, electra, distilbert, modernbert, ...)",
    )
    revision: str | None = Field(
        None, description="a Hub model's commit (or branch or tag) to download; null: its main branch. The commit "
        "it resolved to is recorded in provenance and MLflow tags")
    scratch: ScratchConfig = Field(default_factory=ScratchConfig)

    @model_validator(mode="after")
    def _revision_needs_hub_id(self) -> ModelConfig:
        if self.revision is not None and (self.source == "scratch" or self.source.startswith("builtin:")
                                          or Path(self.source).exists()):
            raise ValueError(f"revision = {self.revision!r} pins a Hub model, but source = '{self.source}' is not a "
                             "Hub id (a local directory or a builtin is pinned by its content hash); set "
                             "model.revision to null")
        if self.revision is not None and not self.revision.strip():
            raise ValueError("revision is empty; give a commit, branch or tag, or null for the main branch")
        return self

    @field_validator("source")
    @classmethod
    def _source(cls, value: str) -> str:
        if value == "scratch":
            return value
        if value.startswith("builtin:"):
            name = value.removeprefix("builtin:")
            if name not in BUILTIN_MODELS:
                raise ValueError(unknown_builtin(name, BUILTIN_MODELS))
            return value
        if Path(value).exists():
            if not Path(value).is_dir():
                raise ValueError(f"'{value}' is a file; a local model must be a directory with config.json")
            return value
        if not HUB_ID.match(value):
            raise ValueError(
                f"'{value}' is neither 'scratch', a builtin, an existing directory nor a Hub id like 'org/name'"
            )
        return value


class PrepareConfig(Section):
    """Splitting, de-duplication, tokenization."""

    max_length: Annotated[int, Field(ge=16, le=512)] = Field(
        64, description="token limit per text (longer texts are truncated and counted) and the masked-LM block size")
    val_fraction: Fraction = Field(0.1, description="share of the labeled rows in the validation split")
    test_fraction: Fraction = Field(
        0.1, description="share of the labeled rows in the test split (unused when data.test gives the test set)")
    group_column: str | None = Field(
        "auto",
        description="column whose groups never span two splits; 'auto' = the builtin's natural group "
        "(movie_name for rotten_tomatoes), none for user files; null = no grouping",
    )
    n_per_class: PositiveInt | None = Field(
        None, description="few-shot: keep this many training labels per class; the other train texts stay in "
        "the masked-LM corpus as unlabeled text")
    true_few_shot: bool = Field(
        False, description="with n_per_class: cap validation to n_per_class per class too (nothing is chosen on "
        "more labels than the budget)")

    @model_validator(mode="after")
    def _true_few_shot(self) -> PrepareConfig:
        if self.true_few_shot and self.n_per_class is None:
            raise ValueError("true_few_shot: true caps validation to n_per_class labels per class, but n_per_class "
                             "is null; set n_per_class or true_few_shot: false")
        return self

    @model_validator(mode="after")
    def _fractions(self) -> PrepareConfig:
        if self.val_fraction + self.test_fraction >= 0.9:
            raise ValueError(
                f"val_fraction + test_fraction = {self.val_fraction + self.test_fraction:g} leaves under 10% "
                "of the data for training; lower them"
            )
        return self


class TrainingConfig(Section):
    """Keys shared by every training stage (each stage has its own copy in params.yaml)."""

    max_steps: PositiveInt | None = Field(None, description="optimizer steps; null trains for `epochs`")
    epochs: Annotated[float, Field(gt=0)] = Field(1.0, description="passes over the data when max_steps is null")
    batch_size: PositiveInt = Field(32, description="examples per batch and process (several processes: per GPU)")
    gradient_accumulation_steps: PositiveInt = Field(1, description="batches summed into one optimizer step")
    learning_rate: Annotated[float, Field(gt=0, lt=1)] = Field(5e-5, description="peak learning rate (AdamW)")
    warmup_ratio: Annotated[float, Field(ge=0, lt=1)] = Field(
        0.1, description="share of the steps with a linear warmup; the rate then decays linearly to 0")
    weight_decay: Annotated[float, Field(ge=0, lt=1)] = Field(0.01, description="AdamW weight decay")
    save_steps: PositiveInt = Field(50, description="interval of the Trainer checkpoints a killed run resumes from")
    logging_steps: PositiveInt = Field(10, description="interval of the per-step metrics (MLflow, plots/)")


class PretrainUnsupConfig(TrainingConfig):
    """Masked-LM pretraining on the prepared corpus."""

    max_steps: PositiveInt | None = 20
    learning_rate: Annotated[float, Field(gt=0, lt=1)] = 2e-4
    save_steps: PositiveInt = 10
    logging_steps: PositiveInt = 5
    mlm_probability: Annotated[float, Field(gt=0, lt=1)] = Field(
        0.15, description="share of tokens masked for L_mlm (of those: 80% [MASK], 10% random, 10% kept)")
    whole_word_masking: bool = Field(False, description="mask every token of a chosen word together")
    head_warmup_steps: Annotated[int, Field(ge=0)] = Field(
        0, description="first steps that train only the heads, the encoder frozen (a fresh MLM head)")


class PretrainSupConfig(TrainingConfig):
    """Supervised pretraining: L = L_mlm + lambda(t) * L_supervised."""

    max_steps: PositiveInt | None = 50
    learning_rate: Annotated[float, Field(gt=0, lt=1)] = 2e-4
    save_steps: PositiveInt = 25
    logging_steps: PositiveInt = 5
    lambda_: Annotated[float, Field(ge=0, alias="lambda")] = Field(
        1.0, description="weight of L_supervised where lambda(t) starts; 0 is the control run (masked-LM only)")
    lambda_min: Annotated[float, Field(ge=0)] = Field(
        0.0, description="where a decaying lambda_schedule ends (at most lambda)")
    lambda_schedule: Literal["constant", "linear_decay", "cosine_decay", "exponential_decay"] = Field(
        "constant", description="lambda(t) over the steps: constant, or a decay from lambda towards lambda_min "
        "(linear and cosine reach it at the last step; exponential is lambda_min + (lambda - lambda_min) * 0.01^(t/T))")
    mlm_probability: Annotated[float, Field(gt=0, lt=1)] = Field(
        0.15, description="share of tokens masked for L_mlm (of those: 80% [MASK], 10% random, 10% kept)")
    whole_word_masking: bool = Field(False, description="mask every token of a chosen word together")
    unlabeled_mix_ratio: Annotated[float, Field(ge=0, lt=1)] = Field(
        0.0, description="fraction of training examples drawn from the unlabeled corpus (masked-LM only)"
    )
    supervised_input: Literal["clean", "masked"] = Field(
        "clean", description="what the classifier reads: the unmasked text (a second encoder pass, as in "
        "finetuning and test) or the masked text that L_mlm reads (one pass, cheaper)")
    weighting: Weighting = Field(
        "normalized", description="how L_mlm and L_supervised are weighed (spt/train/losses.py); lambda(t) "
        "multiplies the supervised term in every mode, and lambda(t) = 0 is plain masked-LM in every mode")
    uncertainty_learning_rate: Annotated[float, Field(gt=0, lt=10)] = Field(
        0.05, description="weighting: uncertainty: peak learning rate of the two learned log-variances "
        "(same optimizer and schedule, no weight decay); at the encoder's rate they would barely move")

    @model_validator(mode="after")
    def _lambda_min(self) -> PretrainSupConfig:
        if self.lambda_schedule != "constant" and self.lambda_min > self.lambda_:
            raise ValueError(f"lambda_min ({self.lambda_min}) must not exceed lambda ({self.lambda_})")
        return self

    def swept(self, weighting: str, lambda_: float) -> PretrainSupConfig:
        """This section with ``weighting`` and ``lambda`` replaced (a setting of the sweep), validated again."""
        try:
            return PretrainSupConfig.model_validate({**section_dict(self), "weighting": weighting,
                                                     "lambda": float(lambda_)})
        except ValidationError as err:
            problems = "; ".join(_describe(error) for error in err.errors())
            raise ConfigError(f"--weighting {weighting} --lambda {lambda_} with params.yaml's pretrain_sup: "
                              f"{problems}; choose another setting (study.weightings, study.lambdas)") from None


class FinetuneConfig(TrainingConfig):
    """Sequence-classification finetuning."""

    max_steps: PositiveInt | None = 250
    learning_rate: Annotated[float, Field(gt=0, lt=1)] = 2e-4
    save_steps: PositiveInt = Field(25, description="checkpoint and validation interval (validated at step 0 too)")
    init_from: Literal["pretrain_sup", "pretrain_unsup"] = Field(
        "pretrain_sup", description="the checkpoint finetuning starts from: pretrain_sup (SPT, its classifier head "
        "carried over) or pretrain_unsup (the standard recipe)")
    early_stopping_patience: PositiveInt | None = Field(
        3, description="evaluations without macro-F1 improvement before stopping; null disables"
    )


class EvaluateConfig(Section):
    """Test-set evaluation."""

    batch_size: PositiveInt = Field(64, description="test batch size (the embeddings floor embeds in batches of it)")
    ece_bins: Annotated[int, Field(ge=2, le=100)] = Field(
        10, description="confidence bins of the expected calibration error (ECE)")


def distinct_values(values: list) -> list:
    """Field validator of the lists whose entries must not repeat (seeds, arms, floors, C values)."""
    if len(set(values)) != len(values):
        raise ValueError(f"values must be distinct, got {values}")
    return values


class FloorsConfig(Section):
    """The floors that need no pretraining (study_floors: TF-IDF and frozen source embeddings, each with
    logistic regression; see study/floors.py)."""

    arms: list[Literal["tfidf", "embeddings"]] = Field(
        default_factory=lambda: ["tfidf"],
        description="the floors study_floors runs and compare reports; [] runs none")
    c_grid: list[Annotated[float, Field(gt=0)]] = Field(
        default_factory=lambda: [0.01, 0.1, 1.0, 10.0, 100.0], min_length=1,
        description="inverse regularisation strengths C tried; each is fitted on train and the best validation "
        "macro-F1 wins (ties: the first listed)")

    _distinct = field_validator("arms", "c_grid")(distinct_values)


class StudyConfig(Section):
    """The comparison: SPT vs the standard recipe, per seed (see stages/compare.py)."""

    seeds: list[Annotated[int, Field(ge=0)]] = Field(
        default_factory=lambda: [42], min_length=1,
        description="train every arm once per seed: its pretraining (spt, tapt) and finetuning; pretrain_unsup "
        "is shared")
    target_fraction: Annotated[float, Field(gt=0, le=1)] = Field(
        0.99, description="steps-to-target: this fraction of the baseline's best validation macro-F1")
    target: Annotated[float, Field(gt=0, le=1)] | None = Field(
        None, description="steps-to-target: this validation macro-F1; null: target_fraction of the baseline's best")
    bootstrap_samples: Annotated[int, Field(ge=100)] = Field(
        2000, description="paired-bootstrap draws of the test examples behind the 95% intervals: the macro-F1 test "
        "noise all seeds share, and the labels-per-class curve's intervals (study/stats.py)")
    pretrained_controls: list[Literal["tapt"]] = Field(
        default_factory=list,
        description="[tapt]: the control with SPT's pretraining budget and no labels (masked-LM on the same texts, "
        "then finetune); a list because dvc.yaml's matrix runs over it. spt and baseline always run")
    matched_baselines: list[Literal["baseline_matched", "baseline_flops"]] = Field(
        default_factory=list,
        description="the standard recipe given SPT's pretraining compute, in examples (baseline_matched) and/or "
        "in FLOPs (baseline_flops); spt and baseline always run")

    weightings: list[Weighting] = Field(
        default_factory=list,
        description="the sweep's weighting axis (with study.lambdas): every pair of study.weightings x study.lambdas "
        "trains as the spt arm does, with pretrain_sup's weighting and lambda replaced, for every seed; compare "
        "keeps the best mean validation macro-F1 (pretrain_sup's own setting is always a candidate) as spt. "
        "[] with lambdas []: no sweep")
    lambdas: list[int | float] = Field(
        default_factory=list,
        description="the sweep's lambda axis (with study.weightings): distinct positive numbers; [] with "
        "weightings []: no sweep")
    labels_per_class: list[PositiveInt] = Field(
        default_factory=list,
        description="the label-budget curve: for each number, every arm and floor trains once per seed on that many "
        "training labels per class (the other train texts stay masked-LM text); the full set is always the curve's "
        "last point (the study's own runs). []: no curve but that point")
    cap_validation: bool = Field(
        False, description="the label-budget curve: cap validation to the budget per class too (what a user with "
        "that few labels would have to choose with)")
    labeled_share: Annotated[float, Field(gt=0, le=1)] = Field(
        0.5, description="the label-budget curve: share of pretrain_sup's examples (spt and tapt alike) that are the "
        "budget's labeled texts, cycled; the rest are the other train texts without their labels (1: labeled only)")

    _distinct = field_validator("seeds", "pretrained_controls", "matched_baselines", "weightings", "lambdas",
                                "labels_per_class")(distinct_values)

    @field_validator("pretrained_controls", mode="before")
    @classmethod
    def _controls_list(cls, values: Any) -> Any:
        if isinstance(values, (str, bool)) or values is None:
            raise ValueError("write [tapt] to run the tapt control, [] not to (a list, because dvc.yaml's matrix "
                             "runs over it)")
        return values

    @field_validator("labels_per_class", mode="before")
    @classmethod
    def _no_null_budget(cls, values: Any) -> Any:
        if isinstance(values, list) and any(value is None for value in values):
            raise ValueError(f"{values}: null (the full training set) is always the curve's last point, the study's "
                             "own runs; list only the smaller budgets, e.g. [8, 32, 128]")
        return values

    @field_validator("lambdas", mode="before")
    @classmethod
    def _positive_numbers(cls, values: Any) -> Any:
        if not isinstance(values, list):
            return values  # the type check names the problem
        bad = [value for value in values if isinstance(value, bool) or not isinstance(value, (int, float))
               or not math.isfinite(value) or value <= 0]
        if bad:
            raise ValueError(f"{', '.join(map(repr, bad))} {'is' if len(bad) == 1 else 'are'} not a positive number; "
                             "every lambda of the sweep weighs L_supervised (lambda = 0 is the tapt arm), written as "
                             "a number, e.g. [0.3, 1, 3]")
        return values


class RuntimeConfig(Section):
    """Execution settings that change numbers; fixed for reproducibility."""

    num_threads: Annotated[int, Field(ge=0)] = Field(
        2, description="torch CPU threads per process (results depend on it); 0 lets torch decide"
    )
    dataloader_workers: Annotated[int, Field(ge=0)] = Field(
        0, description="DataLoader worker processes (results depend on it); 0 loads in the training process")
    launch: str = Field(
        "python",
        description="the command stages.launch starts each training stage with (no shell), followed by "
        "`-m stages.<name>`: python, 'torchrun --nproc_per_node N' or 'accelerate launch --config_file FILE'",
    )

    @field_validator("launch")
    @classmethod
    def _launcher(cls, value: str) -> str:
        check_launcher(value)
        return value


class TrackingConfig(Section):
    """MLflow tracking."""

    uri: str | None = Field(None, description="tracking URI; null = $MLFLOW_TRACKING_URI or sqlite:///mlflow.db")
    experiment: str = Field("spt", description="MLflow experiment the runs are logged under")
    required: bool = Field(True, description="false: continue with a warning when the server is unreachable")
    registered_model: str = Field("spt-classifier", description="Model Registry name; evaluate adds a version")


class Params(Section):
    """The whole of params.yaml."""

    seed: Annotated[int, Field(ge=0)] = Field(
        42, description="seeds prepare's splits, pretrain_unsup and the main chain (initialisation, masking, data "
        "order); the study's arms train once per study.seeds")
    data: DataConfig
    model: ModelConfig = Field(default_factory=ModelConfig)
    prepare: PrepareConfig = Field(default_factory=PrepareConfig)
    pretrain_unsup: PretrainUnsupConfig = Field(default_factory=PretrainUnsupConfig)
    pretrain_sup: PretrainSupConfig = Field(default_factory=PretrainSupConfig)
    finetune: FinetuneConfig = Field(default_factory=FinetuneConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    floors: FloorsConfig = Field(default_factory=FloorsConfig)
    study: StudyConfig = Field(default_factory=StudyConfig)
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)

    @model_validator(mode="after")
    def _sweep(self) -> Params:
        """The sweep's two axes go together, and no lambda of it lies below the lambda_min a schedule decays to
        (the stage checks each setting again: PretrainSupConfig.swept)."""
        study, sup = self.study, self.pretrain_sup
        if bool(study.weightings) != bool(study.lambdas):
            given, missing = ("lambdas", "weightings") if study.lambdas else ("weightings", "lambdas")
            own = sup.weighting if missing == "weightings" else f"{sup.lambda_:g}"
            raise ValueError(
                f"study.{given} = {getattr(study, given)} but study.{missing} is empty: the sweep trains every pair of "
                "study.weightings x study.lambdas (one DVC matrix), and with an empty axis there is no pair, so "
                f"nothing would be swept. To sweep {given} alone, give study.{missing} pretrain_sup's own value: "
                f"-S 'study.{missing}=[{own}]' (or set both to [] for no sweep)")
        if sup.lambda_schedule != "constant":
            low = [value for value in study.lambdas if value < sup.lambda_min]
            if low:
                verb = "is" if len(low) == 1 else "are"
                raise ValueError(f"study.lambdas = {study.lambdas}: {', '.join(map(str, low))} {verb} below "
                                 f"pretrain_sup.lambda_min ({sup.lambda_min}), which {sup.lambda_schedule} decays "
                                 "lambda towards; raise those lambdas or lower pretrain_sup.lambda_min")
        return self


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate ``path``; raise :class:`ConfigError` listing every problem at once."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found; run from the repository root") from None
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: not valid YAML: {err}\nFix the YAML syntax at the line shown and run "
                          "again.") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level, got {type(raw).__name__}")
    try:
        return Params.model_validate(raw)
    except ValidationError as err:
        problems = [_describe(error) for error in err.errors()]
        raise ConfigError(
            f"{path}: {len(problems)} problem{'s' if len(problems) > 1 else ''}:\n"
            + "\n".join(f"  - {p}" for p in problems)
            + "\nFix these keys in params.yaml (or your `dvc exp run -S` flags) and run again."
        ) from None


class DeclaredParams:
    """The params a stage may read: exactly those its dvc.yaml stage declares, plus ``tracking``.

    DVC reruns a stage only when a declared param changes, so a stage that read an undeclared one
    would go stale silently. This view makes such a read fail at once, naming the key and the
    dvc.yaml stage to declare it in. ``declared`` holds dvc.yaml's entries: a section (``finetune``)
    or a single key (``pretrain_sup.max_steps``). ``tracking`` is always readable: it says where
    runs are logged, which changes no output.
    """

    def __init__(self, params: Params, declared: list[str], dvc_stage: str, prefix: str = ""):
        self._params, self._declared, self._dvc_stage, self._prefix = params, list(declared), dvc_stage, prefix

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        key = self._prefix + ("lambda" if name == "lambda_" else name)
        value = getattr(self._params, name)
        if key == "tracking" or any(entry == key or key.startswith(entry + ".") for entry in self._declared):
            return value
        if isinstance(value, BaseModel) and any(entry.startswith(key + ".") for entry in self._declared):
            return DeclaredParams(value, self._declared, self._dvc_stage, key + ".")
        raise AttributeError(
            f"the stage reads params '{key}', which dvc.yaml stage '{self._dvc_stage}' does not declare, so DVC "
            f"would not rerun it when '{key}' changes; add '{key}' to that stage's params in dvc.yaml")

    def declared(self) -> dict[str, Any]:
        """The declared params as plain data with params.yaml's key names, e.g. for logging."""
        values: dict[str, Any] = {}
        for entry in self._declared:
            value: Any = self._params
            for part in entry.split("."):
                value = getattr(value, "lambda_" if part == "lambda" else part)
            values[entry] = section_dict(value) if isinstance(value, BaseModel) else value
        return values

    def everything(self) -> Params:
        """All params: for the pipeline's parent run in MLflow only, which describes the whole pipeline."""
        return self._params


def section_dict(section: BaseModel) -> dict[str, Any]:
    """A section as plain data with params.yaml's own key names (``lambda``, not ``lambda_``)."""
    return section.model_dump(mode="json", by_alias=True)


def _describe(error: dict[str, Any]) -> str:
    key = ".".join(str(part) for part in error["loc"])
    if not key:  # a check across sections (Params): the message names its keys
        return error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        if key in RENAMED:
            return f"{key}: unknown key; renamed to {RENAMED[key]}"
        known = _known_keys(error["loc"][:-1])
        hint = difflib.get_close_matches(str(error["loc"][-1]), known, n=1)
        suggestion = f"; did you mean '{hint[0]}'?" if hint else f"; known keys: {', '.join(known)}"
        return f"{key}: unknown key{suggestion}"
    if error["type"] == "missing":
        return f"{key}: required key is missing"
    value = error.get("input")
    message = error["msg"].removeprefix("Value error, ")
    if isinstance(value, dict):  # a check across a section's keys: the message names them and their values
        return f"{key}: {message}"
    return f"{key} = {value!r}: {message}"


def _known_keys(loc: tuple) -> list[str]:
    model: type[BaseModel] = Params
    for part in loc:
        field = model.model_fields.get(str(part)) or next(
            (f for f in model.model_fields.values() if f.alias == part), None
        )
        if field is None or not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
            return []
        model = field.annotation
    return [field.alias or name for name, field in model.model_fields.items()]


def check_launcher(value: str) -> None:
    """``runtime.launch`` is a launcher command that stages.launch can put before ``-m stages.<name>``.

    Its first word is python (python3, python3.N), torchrun or ``accelerate launch``, with or without a
    directory; no ``-m`` (stages.launch adds it) and no shell characters. stages.launch runs it without a
    shell, so these would be no more than odd arguments there; they are refused because a value that holds
    them was meant for a shell, and had it reached one would have run something else.
    """
    usage = "use python, 'torchrun --nproc_per_node N' or 'accelerate launch --config_file FILE'"
    if not value.strip():
        raise ValueError(f"is empty; {usage}")
    operators = sorted({char for char in value if char in SHELL_OPERATORS})
    if operators:
        raise ValueError(f"contains the shell character(s) {' '.join(map(repr, operators))}; it must be one launcher "
                         f"command, which is never run by a shell ({usage})")
    try:
        words = shlex.split(value)
    except ValueError as err:
        raise ValueError(f"cannot be split into words ({err}); {usage}") from None
    if "-m" in words or "--module" in words:
        raise ValueError("must not contain -m: stages.launch appends `-m stages.<name>` itself; remove it")
    launcher = Path(words[0]).name
    if launcher == "accelerate" and words[1:2] != ["launch"]:
        raise ValueError(f"runs accelerate without `launch`; write 'accelerate launch ...' ({usage})")
    if not (launcher in LAUNCHERS or _PYTHON.match(launcher)):
        raise ValueError(f"'{words[0]}' is neither python, torchrun nor accelerate launch; {usage}")
