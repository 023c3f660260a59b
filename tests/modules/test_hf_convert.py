"""Hugging Face conversion: parity with transformers on the real MiniLM, round trips, clear errors."""
import json
import logging
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import mindspore as ms
import pytest
from safetensors.numpy import load_file, save_file

from src.checkpoint import (assign_parameters, load_checkpoint, model_metadata, named_parameters, save_checkpoint,
                            split_metadata)
from src.hf_convert import export_hf, import_hf
from src.logger import LOGGER_NAME
from src.tinybert_model import BertConfig, BertForSequenceClassification, BertModel

ROOT = Path(__file__).resolve().parents[2]
SENTENCES = ["A man is playing a guitar.",
             "The quick brown fox jumps over the lazy dog while the farmer watches from the porch.",
             "Hello!"]
PAIRS = [("Is it raining?", "The streets are wet and people carry umbrellas.")]
TINY_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"word{i}" for i in range(60)]


def _hf_libraries():
    torch = pytest.importorskip("torch", reason="comparing with Hugging Face needs torch")
    transformers = pytest.importorskip("transformers", reason="comparing with Hugging Face needs transformers")
    return torch, transformers


def _load_ours(model, checkpoint, prefix=""):
    tensors, _ = split_metadata(load_checkpoint(checkpoint))
    assign_parameters(named_parameters(model, prefix), tensors, str(checkpoint))
    model.set_train(False)
    return model


def _save_student(tmp_path, config, num_labels):
    """A random student as training leaves it (with fit_dense and optimizer state); returns its files."""
    ms.set_seed(1)
    if num_labels:
        model = BertForSequenceClassification(config, num_labels)
        params = named_parameters(model)
    else:
        model = BertModel(config)
        params = named_parameters(model, "bert.")
    extra = {"fit_dense.weight": ms.Tensor(np.ones((48, config.hidden_size), np.float32)),
             "state.moment1.bert.dense.bias": ms.Tensor(np.ones(config.hidden_size, np.float32))}
    save_checkpoint(tmp_path / "student.ckpt", {**params, **extra}, {"step": 7})
    (tmp_path / "config.json").write_text(json.dumps(config.to_dict()), encoding="utf-8")
    (tmp_path / "vocab.txt").write_text("\n".join(TINY_VOCAB) + "\n", encoding="utf-8")
    model.set_train(False)
    return model, params


def _export_student(tmp_path, config, num_labels=3):
    model, params = _save_student(tmp_path, config, num_labels)
    export_hf(tmp_path / "student.ckpt", tmp_path / "config.json", tmp_path / "vocab.txt", tmp_path / "hf",
              num_labels=num_labels)
    return tmp_path / "hf", model, params


def _tiny_inputs(config):
    rng = np.random.default_rng(0)
    ids = rng.integers(0, len(TINY_VOCAB), (5, 9)).astype(np.int32)
    types = (np.arange(9) >= 5).astype(np.int32).repeat(5).reshape(9, 5).T.copy()
    mask = np.ones((5, 9), np.int32)
    mask[1, 6:] = 0
    mask[3, 2:] = 0
    assert ids.max() < config.vocab_size
    return ids, types, mask


def _rewrite_weights(hf_dir, edit):
    path = hf_dir / "model.safetensors"
    save_file(edit(load_file(str(path))), str(path), metadata={"format": "pt"})


def test_minilm_matches_transformers(minilm_dir, tmp_path):
    torch, transformers = _hf_libraries()
    import_hf(minilm_dir, tmp_path / "minilm")
    ours = _load_ours(BertModel(BertConfig.from_json_file(tmp_path / "minilm" / "config.json")),
                      tmp_path / "minilm" / "model.ckpt", "bert.")
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(minilm_dir))
    # One padded length for singles and pairs, so the graph compiles once; pairs use token type 1.
    singles = tokenizer(SENTENCES, padding="max_length", max_length=32, return_tensors="np")
    pairs = tokenizer(*zip(*PAIRS), padding="max_length", max_length=32, return_tensors="np")
    ids, types, mask = (np.concatenate([singles[k], pairs[k]]).astype(np.int32)
                        for k in ("input_ids", "token_type_ids", "attention_mask"))
    assert (mask == 0).any() and (types == 1).any()

    _, pooled, hidden_states, _ = ours(ms.Tensor(ids), ms.Tensor(mask), ms.Tensor(types))
    reference = transformers.BertModel.from_pretrained(str(minilm_dir)).eval()
    with torch.no_grad():
        expected = reference(input_ids=torch.tensor(ids, dtype=torch.long),
                             token_type_ids=torch.tensor(types, dtype=torch.long),
                             attention_mask=torch.tensor(mask, dtype=torch.long), output_hidden_states=True)
    real = mask.astype(bool)
    assert len(hidden_states) == len(expected.hidden_states) == 7
    diffs = [float(np.abs(ours_h.asnumpy()[real] - hf_h.numpy()[real]).max())
             for ours_h, hf_h in zip(hidden_states, expected.hidden_states)]
    logging.getLogger(__name__).info("MiniLM hidden state max abs diffs: %s", diffs)
    assert max(diffs) < 1e-4, diffs
    assert np.abs(pooled.asnumpy() - expected.pooler_output.numpy()).max() < 1e-4


@pytest.mark.parametrize("num_labels", [3, None])
def test_export_loads_in_transformers_and_imports_back(student_config, tmp_path, num_labels):
    torch, transformers = _hf_libraries()
    config = student_config.replace(hidden_act="gelu_tanh")  # exported as HF's "gelu_new"
    hf_dir, ours, params = _export_student(tmp_path, config, num_labels)
    hf_class = transformers.BertForSequenceClassification if num_labels else transformers.BertModel
    reference, info = hf_class.from_pretrained(str(hf_dir), output_loading_info=True)
    assert not (info["missing_keys"] or info["unexpected_keys"] or info["mismatched_keys"]), info
    assert json.loads((hf_dir / "tokenizer_config.json").read_text())["do_lower_case"] is True
    modes = {stat.S_IMODE(path.stat().st_mode) for path in hf_dir.iterdir()}
    assert len(modes) == 1, modes  # model.safetensors as readable as config.json (safetensors alone: 0600)

    ids, types, mask = _tiny_inputs(config)
    outputs = ours(ms.Tensor(ids), ms.Tensor(mask), ms.Tensor(types))
    with torch.no_grad():
        expected = reference.eval()(input_ids=torch.tensor(ids, dtype=torch.long),
                                    token_type_ids=torch.tensor(types, dtype=torch.long),
                                    attention_mask=torch.tensor(mask, dtype=torch.long))
    if num_labels:
        assert np.abs(outputs[0].asnumpy() - expected.logits.numpy()).max() < 1e-4
    else:
        assert np.abs(outputs[1].asnumpy() - expected.pooler_output.numpy()).max() < 1e-4

    import_hf(hf_dir, tmp_path / "back")
    back, metadata = split_metadata(load_checkpoint(tmp_path / "back" / "model.ckpt"))
    assert sorted(back) == sorted(params)
    for name, param in params.items():
        assert np.array_equal(back[name].asnumpy(), param.asnumpy()), name
    assert metadata.get("num_labels") == num_labels
    assert BertConfig.from_json_file(tmp_path / "back" / "config.json") == config


def test_import_accepts_hf_variants(student_config, tmp_path, caplog):
    """No `bert.` prefix, TF-era gamma/beta names, saved position ids, MLM/NSP heads, no pooler."""
    hf_dir, _, params = _export_student(tmp_path, student_config, num_labels=None)

    def edit(weights):
        weights = {name.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"):
                   value for name, value in weights.items() if not name.startswith("pooler.")}
        weights["embeddings.position_ids"] = np.arange(64, dtype=np.int64)[None]
        weights["cls.predictions.bias"] = np.zeros(student_config.vocab_size, np.float32)
        weights["cls.seq_relationship.weight"] = np.zeros((2, student_config.hidden_size), np.float32)
        return weights

    _rewrite_weights(hf_dir, edit)
    app_logger = logging.getLogger(LOGGER_NAME)  # it does not propagate to the root logger caplog watches
    app_logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.INFO, logger=LOGGER_NAME):
            import_hf(hf_dir, tmp_path / "back")
    finally:
        app_logger.removeHandler(caplog.handler)
    assert "ignored 2 masked-LM/next-sentence head tensors" in caplog.text
    assert "no pooler" in caplog.text
    back, _ = split_metadata(load_checkpoint(tmp_path / "back" / "model.ckpt"))
    assert sorted(back) == sorted(params)
    for name, param in params.items():
        if not name.startswith("bert.dense."):
            assert np.array_equal(back[name].asnumpy(), param.asnumpy()), name


def test_import_reads_pytorch_bin(student_config, tmp_path, monkeypatch):
    torch, _ = _hf_libraries()
    hf_dir, _, params = _export_student(tmp_path, student_config)
    weights = load_file(str(hf_dir / "model.safetensors"))
    torch.save({name: torch.from_numpy(value) for name, value in weights.items()}, hf_dir / "pytorch_model.bin")
    (hf_dir / "model.safetensors").unlink()
    import_hf(hf_dir, tmp_path / "back")
    back, _ = split_metadata(load_checkpoint(tmp_path / "back" / "model.ckpt"))
    assert all(np.array_equal(back[name].asnumpy(), param.asnumpy()) for name, param in params.items())

    monkeypatch.setitem(sys.modules, "torch", None)  # as if torch were not installed
    with pytest.raises(ValueError, match="install torch, or convert it to model.safetensors"):
        import_hf(hf_dir, tmp_path / "again")


@pytest.mark.parametrize("edit, message", [
    (lambda d: (d / "config.json").unlink(), "has no config.json"),
    (lambda d: (d / "model.safetensors").unlink(), "has no model.safetensors or pytorch_model.bin"),
    (lambda d: _rewrite_weights(d, lambda w: {k: v for k, v in w.items() if ".layer.1." not in k}),
     r"lacks weights the model needs: encoder\.layer\.1\.attention\.output\.LayerNorm\.bias"),
    (lambda d: _rewrite_weights(d, lambda w: {**w, "bert.encoder.layer.0.attention.self.rotary.weight": w[
        "classifier.bias"]}), r"does not understand: encoder\.layer\.0\.attention\.self\.rotary\.weight"),
    (lambda d: _rewrite_weights(d, lambda w: {**w, "bert.encoder.layer.5.output.dense.bias": w[
        "bert.pooler.dense.bias"]}), r"2-layer model of its config lacks: encoder\.layer\.5\.output\.dense\.bias"),
    (lambda d: (d / "model.safetensors").write_bytes(b"\xff" * 64), r"is not a readable safetensors file"),
])
def test_import_names_what_is_wrong(student_config, tmp_path, edit, message):
    hf_dir, _, _ = _export_student(tmp_path, student_config)
    edit(hf_dir)
    with pytest.raises((FileNotFoundError, ValueError), match=message):
        import_hf(hf_dir, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("change, message", [
    ({"position_embedding_type": "relative_key"}, "position_embedding_type 'relative_key' is not supported"),
    ({"is_decoder": True}, "is_decoder = true is not supported"),
    ({"architectures": ["BertForMultipleChoice"]}, "architecture BertForMultipleChoice is not supported"),
    ({"model_type": "roberta"}, "model_type 'roberta' is not supported"),
    ({"hidden_act": "silu"}, "hidden_act 'silu' is not one of"),
])
def test_import_rejects_unsupported_architectures(student_config, tmp_path, change, message):
    hf_dir, _, _ = _export_student(tmp_path, student_config)
    config = json.loads((hf_dir / "config.json").read_text())
    (hf_dir / "config.json").write_text(json.dumps({**config, **change}))
    with pytest.raises(ValueError, match=message):
        import_hf(hf_dir, tmp_path / "out")


def test_export_checks_the_checkpoint(student_config, tmp_path):
    _save_student(tmp_path, student_config, num_labels=3)
    files = (tmp_path / "student.ckpt", tmp_path / "config.json", tmp_path / "vocab.txt")
    with pytest.raises(ValueError, match="--num_labels 2 but .* has a 3-label classifier"):
        export_hf(*files, tmp_path / "hf", num_labels=2)
    wider = student_config.replace(num_hidden_layers=3)
    (tmp_path / "wide.json").write_text(json.dumps(wider.to_dict()))
    with pytest.raises(ValueError, match=r"lacks weights the model needs: bert\.bert_encoder\.layers\.2\."):
        export_hf(files[0], tmp_path / "wide.json", files[2], tmp_path / "hf")
    (tmp_path / "big_vocab.txt").write_text("\n".join(TINY_VOCAB * 2))
    with pytest.raises(ValueError, match="130 tokens but .* only 99 embeddings"):
        export_hf(files[0], files[1], tmp_path / "big_vocab.txt", tmp_path / "hf")
    model = BertForSequenceClassification(student_config, 3)  # a checkpoint that records its model
    save_checkpoint(tmp_path / "recorded.ckpt", named_parameters(model), model_metadata(model, 3))
    with pytest.raises(ValueError, match=r"--config .*wide.json is not the model .*recorded.ckpt records "
                                         r"\(num_hidden_layers 3 against 2\): leave --config out"):
        export_hf(tmp_path / "recorded.ckpt", tmp_path / "wide.json", files[2], tmp_path / "hf")
    assert not (tmp_path / "hf").exists()


def test_output_dir_is_replaced_only_when_it_holds_a_converted_model(student_config, tmp_path):
    hf_dir, _, _ = _export_student(tmp_path, student_config)
    import_hf(hf_dir, tmp_path / "out")
    import_hf(hf_dir, tmp_path / "out")  # a rerun replaces the earlier result
    (tmp_path / "out" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="holds more than a converted model"):
        import_hf(hf_dir, tmp_path / "out")
    assert (tmp_path / "out" / "notes.txt").exists()
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left behind


def test_cli(student_config, tmp_path):
    hf_dir, _, _ = _export_student(tmp_path, student_config)
    run = [sys.executable, "-m", "src.hf_convert", "import", "--hf_dir"]
    good = subprocess.run(run + [str(hf_dir), "--output_dir", str(tmp_path / "out")],
                          cwd=ROOT, capture_output=True, text=True, check=True)
    assert good.stdout.splitlines()[-1].startswith("imported 41 tensors")
    assert good.stdout.rstrip().endswith("(num_labels 3)") and (tmp_path / "out" / "model.ckpt").is_file()

    bad = subprocess.run(run + [str(tmp_path / "absent"), "--output_dir", str(tmp_path / "bad_out")],
                         cwd=ROOT, capture_output=True, text=True, check=False)
    assert bad.returncode != 0
    assert bad.stderr.strip().splitlines() == [f"error: Hugging Face directory "
                                               f"{tmp_path / 'absent'} does not exist"]
    assert not (tmp_path / "bad_out").exists()
