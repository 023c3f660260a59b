"""Token-classification and question-answering heads: shapes, gradients, and parity with transformers'
BertForTokenClassification / BertForQuestionAnswering through hf_convert in both directions."""
import json

import numpy as np
import mindspore as ms
import pytest
from mindspore import ops

from src.checkpoint import assign_parameters, load_checkpoint, named_parameters, save_checkpoint, split_metadata
from src.hf_convert import export_hf, import_hf
from src.tinybert_model import BertForQuestionAnswering, BertForTokenClassification

NUM_TAGS = 5
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"word{i}" for i in range(60)]


def _inputs(batch=5, seq=9):
    rng = np.random.default_rng(0)
    ids = rng.integers(0, len(VOCAB), (batch, seq)).astype(np.int32)
    mask = np.ones((batch, seq), np.int32)
    mask[1, 6:] = 0
    mask[3, 2:] = 0
    types = np.zeros((batch, seq), np.int32)
    types[:, 5:] = 1
    return ids, mask, types


def _build(config, architecture):
    return BertForTokenClassification(config, NUM_TAGS) if architecture == "token" else BertForQuestionAnswering(config)


def _hf_libraries():
    torch = pytest.importorskip("torch", reason="comparing with Hugging Face needs torch")
    transformers = pytest.importorskip("transformers", reason="comparing with Hugging Face needs transformers")
    return torch, transformers


def _hf_outputs(torch, model, ids, mask, types):
    with torch.no_grad():
        out = model.eval()(input_ids=torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(mask),
                           token_type_ids=torch.tensor(types, dtype=torch.long))
    return [out.logits.numpy()] if hasattr(out, "logits") else [out.start_logits.numpy(), out.end_logits.numpy()]


def _ours(model, ids, mask, types, count):
    model.set_train(False)
    outputs = model(ms.Tensor(ids), ms.Tensor(mask), ms.Tensor(types))
    return [o.asnumpy() for o in outputs[:count]], outputs[count:]


@pytest.mark.parametrize("architecture", ["token", "qa"])
def test_outputs_and_gradients(student_config, architecture):
    ms.set_seed(0)
    model = _build(student_config, architecture)
    ids, mask, types = _inputs()
    count = 1 if architecture == "token" else 2
    logits, (hidden_states, attention_scores) = _ours(model, ids, mask, types, count)
    expected = (5, 9, NUM_TAGS) if architecture == "token" else (5, 9)
    assert all(item.shape == expected and item.dtype == np.float32 for item in logits)
    assert len(hidden_states) == student_config.num_hidden_layers + 1 and len(attention_scores) == 2
    assert hidden_states[-1].shape == (5, 9, student_config.hidden_size)
    assert attention_scores[0].shape == (5, student_config.num_attention_heads, 9, 9)
    # The head reads every position: its logits differ along the sequence.
    assert np.abs(np.diff(logits[0], axis=1)).max() > 1e-3

    model.set_train(True)
    params = model.trainable_params()

    def loss_fn(*inputs):
        outputs = model(*inputs)
        return sum((o ** 2).sum() for o in outputs[:count])

    grads = ops.grad(loss_fn, grad_position=None, weights=params)(ms.Tensor(ids), ms.Tensor(mask), ms.Tensor(types))
    by_name = {p.name: float(np.abs(g.asnumpy()).sum()) for p, g in zip(params, grads)}
    head = "dense_1" if architecture == "token" else "dense1"
    assert by_name[f"{head}.weight"] > 0 and by_name["bert.bert_embedding_lookup.embedding_table"] > 0
    assert by_name["bert.dense.weight"] == 0  # the pooler is not used by either head


def _save_student(tmp_path, config, architecture, metadata):
    ms.set_seed(3)
    model = _build(config, architecture)
    params = named_parameters(model)
    save_checkpoint(tmp_path / "student.ckpt", params, metadata)
    (tmp_path / "config.json").write_text(json.dumps(config.to_dict()), encoding="utf-8")
    (tmp_path / "vocab.txt").write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    return model, params


@pytest.mark.parametrize("architecture, hf_name", [("token", "BertForTokenClassification"),
                                                   ("qa", "BertForQuestionAnswering")])
def test_export_loads_in_transformers_and_imports_back(student_config, tmp_path, architecture, hf_name):
    torch, transformers = _hf_libraries()
    # A token classifier's head is named like a sequence classifier's: the checkpoint says which it is.
    metadata = {"architecture": hf_name, "step": 4} if architecture == "token" else {"step": 4}
    model, params = _save_student(tmp_path, student_config, architecture, metadata)
    result = export_hf(tmp_path / "student.ckpt", tmp_path / "config.json", tmp_path / "vocab.txt", tmp_path / "hf")
    assert result["architecture"] == hf_name
    hf_config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert hf_config["architectures"] == [hf_name]
    tag = "token-classification" if architecture == "token" else "question-answering"
    assert f"\npipeline_tag: {tag}\n" in (tmp_path / "hf" / "README.md").read_text()  # the Hub's widget
    reference, info = getattr(transformers, hf_name).from_pretrained(str(tmp_path / "hf"), output_loading_info=True)
    assert not (info["missing_keys"] or info["unexpected_keys"] or info["mismatched_keys"]), info

    ids, mask, types = _inputs()
    count = 1 if architecture == "token" else 2
    ours, _ = _ours(model, ids, mask, types, count)
    theirs = _hf_outputs(torch, reference, ids, mask, types)
    for a, b in zip(ours, theirs):
        assert a.shape == b.shape and np.abs(a - b).max() < 1e-4

    import_hf(tmp_path / "hf", tmp_path / "back")
    back, back_metadata = split_metadata(load_checkpoint(tmp_path / "back" / "model.ckpt"))
    assert back_metadata["architecture"] == hf_name
    assert back_metadata["num_labels"] == (NUM_TAGS if architecture == "token" else 2)
    # HF's token and QA models have no pooler: it is not exported, and comes back freshly initialised.
    assert sorted(back) == sorted(params)
    for name, param in params.items():
        if not name.startswith("bert.dense."):
            assert np.array_equal(back[name].asnumpy(), param.asnumpy()), name


@pytest.mark.parametrize("hf_name", ["BertForTokenClassification", "BertForQuestionAnswering"])
def test_import_of_a_transformers_model_gives_its_outputs(student_config, tmp_path, hf_name):
    torch, transformers = _hf_libraries()
    torch.manual_seed(0)
    hf_config = transformers.BertConfig(**{k: v for k, v in student_config.to_dict().items() if k != "compute_type"},
                                        num_labels=NUM_TAGS if hf_name == "BertForTokenClassification" else 2)
    reference = getattr(transformers, hf_name)(hf_config)
    reference.save_pretrained(str(tmp_path / "hf"))
    (tmp_path / "hf" / "vocab.txt").write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    result = import_hf(tmp_path / "hf", tmp_path / "ours")
    architecture = "token" if hf_name == "BertForTokenClassification" else "qa"
    model = _build(student_config, architecture)
    tensors, metadata = split_metadata(load_checkpoint(tmp_path / "ours" / "model.ckpt"))
    assert metadata["architecture"] == hf_name and result["num_labels"] == metadata["num_labels"]
    assign_parameters(named_parameters(model), tensors, "imported", allow_missing=("bert.dense.",))

    ids, mask, types = _inputs()
    ours, _ = _ours(model, ids, mask, types, 1 if architecture == "token" else 2)
    for a, b in zip(ours, _hf_outputs(torch, reference, ids, mask, types)):
        assert np.abs(a - b).max() < 1e-4


def test_export_architecture_must_match_the_head(student_config, tmp_path):
    _save_student(tmp_path, student_config, "qa", {"step": 1})
    files = (tmp_path / "student.ckpt", tmp_path / "config.json", tmp_path / "vocab.txt")
    with pytest.raises(ValueError, match="declared a BertForTokenClassification but holds the head of a "
                                         "BertForQuestionAnswering"):
        export_hf(*files, tmp_path / "hf", architecture="BertForTokenClassification")
    assert not (tmp_path / "hf").exists()
    # Without a declared architecture a `dense_1` head exports as a sequence classifier, as before.
    _save_student(tmp_path, student_config, "token", {"step": 1})
    assert export_hf(*files, tmp_path / "hf")["architecture"] == "BertForSequenceClassification"
    assert export_hf(*files, tmp_path / "hf", architecture="BertForTokenClassification")["architecture"] == \
        "BertForTokenClassification"
