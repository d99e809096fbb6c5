"""evaluate's prediction loop: batches of similar lengths, logits back in the split's order."""

import datasets
import numpy as np
import torch
from transformers import AutoModelForSequenceClassification, BertConfig, BertForSequenceClassification

from spt.data.tokenization import by_length, length_order, train_wordpiece
from stages.evaluate import predict


def test_predict_returns_logits_in_split_order(tmp_path):
    tokenizer = train_wordpiece(lambda: [["some words for a tiny vocabulary"] * 20], vocab_size=60, max_length=16)
    torch.manual_seed(0)
    BertForSequenceClassification(BertConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=2,
                                             num_attention_heads=2, intermediate_size=32, num_labels=3)
                                  ).save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    texts = ["some words for a tiny vocabulary", "words", "a tiny", "some words for a", "vocabulary words"]
    test = datasets.Dataset.from_dict({"input_ids": [tokenizer(text)["input_ids"] for text in texts]})
    assert list(length_order(test)) == [1, 2, 4, 3, 0]  # stable: equal lengths keep their order

    logits = predict(tmp_path / "model", test, batch_size=2)

    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "model").eval()
    with torch.inference_mode():
        one_by_one = np.concatenate([model(torch.tensor([ids])).logits.numpy() for ids in test["input_ids"]])
    np.testing.assert_allclose(logits, one_by_one, atol=1e-5)


def test_by_length_sorts_in_memory(tmp_path):
    rows = datasets.Dataset.from_dict({"input_ids": [[1, 2, 3], [1], [1, 2]], "label": [0, 1, 2]})
    rows.save_to_disk(tmp_path / "saved")
    saved = datasets.load_from_disk(str(tmp_path / "saved"))
    before = sorted(path.name for path in (tmp_path / "saved").iterdir())
    assert by_length(saved)["label"] == [1, 2, 0]
    assert sorted(path.name for path in (tmp_path / "saved").iterdir()) == before  # no cache file beside it
