"""prepare: read the sources, clean and split them, build the tokenizer and tokenized datasets.

Reads:  data.labeled, data.test, data.unlabeled (built-ins from pinned packages, hf: datasets
        through datasets.load_dataset, or files), model.source.
Writes: data/processed/ (labeled train/validation/test, packed masked-LM corpus, tokenizer,
        label map), reports/prepare.json (the data report), metrics/prepare.json (its headline
        numbers, for `dvc exp show`), plots/prepare/ (class balance, token lengths).
Params: seed, data, model, prepare.

Splits are stratified by label, group-aware, seeded, and share no text (exact or normalised);
validation and test texts never enter the masked-LM corpus. With data.test the given test set
(e.g. a Hub dataset's official test split) is the test split, whole, and only validation is split
from the rest. With prepare.n_per_class (few-shot) only that many training labels per class are
kept and the other train texts stay in the masked-LM corpus as unlabeled text; prepare.true_few_shot
caps validation to the same budget. Outputs appear only when complete.

As a budget of the label-budget curve (`--labels-per-class N --seed S`, the study_budget_prepare stage,
study.labels_per_class x study.seeds) it reads data/processed and writes data/budgets/nN-S/: N training
labels per class drawn with seed S from the prepared train split (validation capped alike with
study.cap_validation), the other train rows as the split "unlabeled" (pretrain_sup's masked-LM text;
their labels are never read), and budget.json saying what was drawn. The test split stays
data/processed's.
"""

from __future__ import annotations

import csv
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from spt import paths
from spt.data.grammar import dataset_name
from spt.data.sources import iter_unlabeled, read_labeled
from spt.data.splits import (
    SPLITS,
    clean_labeled,
    normalize_text,
    sample_per_class,
    split_labeled,
    text_key,
)
from spt.errors import DataError
from spt.hashing import content_sha256
from spt.model.source import resolve_model_source
from spt.outputs import atomic_output, write_json
from spt.tracking import tracked_run
from stages.cli import run_stage

STAGE = "prepare"
PERCENTILES = (50, 90, 95, 99)


def build_processed(params, output_dir: Path, work_dir: Path) -> dict:
    """Build everything under ``output_dir``; return the data report. ``work_dir`` holds caches."""
    import datasets

    from spt.data.tokenization import (
        SCRATCH_TOKENIZERS,
        load_tokenizer,
        save_dataset,
        save_tokenizer,
        tokenize_and_pack,
        tokenize_labeled,
        train_tokenizer,
    )

    data, prep = params.data, params.prepare
    model_source = resolve_model_source(params.model)  # fail on a bad model before any work
    source = read_labeled(data.labeled, data.text_column, data.label_column, prep.group_column, data.test)
    frame, cleaning = clean_labeled(source, data.labels)
    label_names = sorted(frame["label"].unique())
    splits = split_labeled(frame, label_names, prep.val_fraction, prep.test_fraction, params.seed,
                           source.description)
    # few-shot: the training texts whose labels are not kept stay in the masked-LM corpus (unlabeled
    # text, the realistic semi-supervised case); true_few_shot caps validation to the same budget
    all_train, all_validation = splits["train"], splits["validation"]
    if prep.n_per_class:
        splits["train"] = sample_per_class(all_train, prep.n_per_class, params.seed, "training")
        if prep.true_few_shot:
            splits["validation"] = sample_per_class(all_validation, prep.n_per_class, params.seed, "validation")
    overlap = cross_split_overlap(splits)
    if overlap:  # cannot happen after de-duplication; checked because a leak would void every result
        raise DataError(f"{overlap} texts are shared between splits; please report this as a bug")

    label_ids = {name: i for i, name in enumerate(label_names)}
    corpus_stats: dict[str, int] = {}
    try:
        corpus = datasets.Dataset.from_generator(
            corpus_texts, gen_kwargs={"train": all_train, "held_out": (all_validation, splits["test"]),
                                      "sources": tuple(data.unlabeled), "text_column": data.text_column,
                                      "stats": corpus_stats},
            cache_dir=str(work_dir / "cache"), features=datasets.Features({"text": datasets.Value("string")}))
    except datasets.exceptions.DatasetGenerationError as err:
        # datasets wraps what the generator raised; a problem in the user's file must read as one
        if isinstance(err.__cause__, DataError):
            raise err.__cause__ from None
        raise
    if model_source.name_or_path is None:
        tokenizer = train_tokenizer(SCRATCH_TOKENIZERS[params.model.scratch.architecture], lambda: _iter_texts(corpus),
                                    params.model.scratch.vocab_size, prep.max_length)
    else:
        tokenizer = load_tokenizer(model_source.name_or_path, prep.max_length)

    labeled = datasets.DatasetDict({
        name: tokenize_labeled(
            datasets.Dataset.from_dict({"text": part["text"].tolist(),
                                        "label": [label_ids[label] for label in part["label"]]}),
            tokenizer, prep.max_length)
        for name, part in splits.items()})
    packed, document_lengths = tokenize_and_pack(corpus, tokenizer, prep.max_length)
    if len(packed) == 0:
        raise DataError(f"the masked-LM corpus holds {int(document_lengths.sum())} tokens, less than one block of "
                        f"prepare.max_length = {prep.max_length}; add data.unlabeled sources")

    save_dataset(labeled, output_dir / paths.LABELED.relative_to(paths.PROCESSED))
    save_dataset(packed, output_dir / paths.CORPUS.relative_to(paths.PROCESSED))
    save_tokenizer(tokenizer, output_dir / paths.TOKENIZER.relative_to(paths.PROCESSED))
    write_json(output_dir / paths.DATASET.name, {"name": dataset_name(data.labeled), "labeled": data.labeled})
    write_json(output_dir / paths.LABEL_MAP.name, {"label2id": label_ids,
                                                   "id2label": {str(i): n for n, i in label_ids.items()}})
    return {
        "sources": {"labeled": source.provenance, "model": model_source.provenance,
                    "unlabeled": data.unlabeled},
        # the given test set (data.test), or null: test_fraction of data.labeled
        "test_set": data.test,
        **cleaning.as_dict(),
        "labels": label_names,
        "splits": {name: len(labeled[name]) for name in SPLITS},
        # few-shot (prepare.n_per_class): rows before sampling; the unsampled train texts are corpus text
        "train_rows_before_few_shot": len(all_train),
        "validation_rows_before_few_shot": len(all_validation),
        "cross_split_shared_texts": overlap,
        "class_balance": {name: part["label"].value_counts().sort_index().to_dict() for name, part in splits.items()},
        "truncated": {name: int(sum(labeled[name]["truncated"])) for name in SPLITS},
        "token_length": {name: _percentiles(np.asarray(labeled[name]["length"])) for name in SPLITS},
        "corpus": {**corpus_stats, "tokens": int(document_lengths.sum()), "blocks": len(packed),
                   "block_size": prep.max_length, "document_token_length": _percentiles(document_lengths)},
        "tokenizer_vocab_size": len(tokenizer),
    }


def corpus_texts(train: pd.DataFrame, held_out: tuple[pd.DataFrame, ...], sources: tuple[str, ...],
                 text_column: str, stats: dict[str, int]) -> Iterator[dict[str, str]]:
    """The masked-LM corpus, streamed: every train text (labels kept or not), then each unlabeled source.

    Empty texts and duplicates (normalised) are dropped, and so is any text that is also in
    ``held_out`` (the validation and test rows, before any few-shot cap). Counts go to ``stats``.
    ``held_out`` and ``sources`` are tuples because ``Dataset.from_generator`` shards list-valued
    gen_kwargs into separate generator calls.
    """
    held_out_keys = {text_key(t) for part in held_out for t in part["text"]}
    seen: set[bytes] = set()
    stats.update(documents=0, dropped_empty=0, dropped_duplicate=0, dropped_eval_overlap=0)
    texts = [iter(train["text"].tolist())] + [iter_unlabeled(s, text_column) for s in sources]
    for stream in texts:
        for text in stream:
            if not isinstance(text, str) or not text.strip():
                stats["dropped_empty"] += 1
                continue
            key = text_key(text)
            if key in held_out_keys:
                stats["dropped_eval_overlap"] += 1
            elif key in seen:
                stats["dropped_duplicate"] += 1
            else:
                seen.add(key)
                stats["documents"] += 1
                yield {"text": text.strip()}


def cross_split_overlap(splits: dict[str, pd.DataFrame]) -> int:
    """Number of normalised texts present in more than one split."""
    keys = [set(part["text"].map(normalize_text)) for part in splits.values()]
    return sum(len(a & b) for i, a in enumerate(keys) for b in keys[i + 1:])


def _iter_texts(corpus) -> Iterator[list[str]]:
    for batch in corpus.iter(batch_size=1000):
        yield batch["text"]


def _percentiles(lengths: np.ndarray) -> dict[str, int]:
    if lengths.size == 0:
        return {}
    values = {f"p{p}": int(np.percentile(lengths, p)) for p in PERCENTILES}
    return {**values, "max": int(lengths.max()), "mean": round(float(lengths.mean()), 2)}


def headline(report: dict) -> dict[str, int]:
    """The data report's few numbers worth a column in `dvc exp show` (the rest would flood it)."""
    return {"rows_read": report["rows_read"], "rows_dropped": sum(report["dropped"].values()),
            **{f"rows_{name}": report["splits"][name] for name in SPLITS},
            "label_count": len(report["labels"]), "corpus_blocks": report["corpus"]["blocks"]}


def write_plots(report: dict, directory: Path) -> None:
    """Class balance per split and token-length percentiles, as CSV for ``dvc plots``."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / "class_balance.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["split", "label", "count"])
        for split, counts in report["class_balance"].items():
            for label, count in counts.items():
                writer.writerow([split, label, count])
    with open(directory / "token_lengths.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["set", "percentile", "tokens"])
        sets = {**report["token_length"], "corpus_documents": report["corpus"]["document_token_length"]}
        for name, values in sets.items():
            for key, value in values.items():
                if key.startswith("p"):
                    writer.writerow([name, int(key[1:]), value])


def main(params, labels_per_class: int | None = None, seed: int | None = None) -> None:
    """Prepare data/processed; with ``labels_per_class`` and ``seed``, draw a point of the labels-per-class curve."""
    import datasets

    if labels_per_class is not None:
        from study.curve import draw_labels

        datasets.disable_caching()
        draw_labels(params, labels_per_class, seed)
        return

    # datasets would otherwise cache every map/cast beside its inputs; prepare writes only its outputs
    datasets.disable_caching()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    with tracked_run(STAGE, params) as tracker:
        work_dir = Path(tempfile.mkdtemp(prefix="prepare-"))
        try:
            with atomic_output(paths.PROCESSED) as staging:
                staging.mkdir()
                report = build_processed(params, staging, work_dir)
        finally:
            shutil.rmtree(work_dir, ignore_errors=True)
        write_json(paths.DATA_REPORT, report)
        tracker.write_metrics(paths.metrics_file(STAGE), headline(report))
        with atomic_output(paths.plots_dir(STAGE)) as staging:
            write_plots(report, staging)
        tracker.log_metrics({**headline(report), "corpus_tokens": report["corpus"]["tokens"]})
        tracker.log_dict(report, "data_report.json")
        tracker.log_datasets(dataset_name(params.data.labeled), content_sha256(paths.PROCESSED),
                             {**report["splits"], "corpus": report["corpus"]["blocks"]})


if __name__ == "__main__":
    run_stage(__doc__, main, STAGE, draws_labels=True)
