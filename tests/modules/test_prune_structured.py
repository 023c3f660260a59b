"""Structured pruning: pruned_heads in the config, importance against finite differences, physical
removal against zeroed weights, zero-filled heads against transformers."""
import json

import numpy as np
import pytest
from mindspore import Tensor

from conftest import BATCH, SEQ
from src.checkpoint import MODEL_CONFIG, NUM_LABELS, SEQ_LENGTH, TASK, load_model, named_parameters, save_checkpoint
from src.cli import run_cli
from src.prune import structured
from src.records_writer import RecordsWriter
from src.tinybert_model import BertConfig, BertForSequenceClassification

LAYER = "bert.bert_encoder.layers.{}."
ATTENTION_OUTPUT = LAYER + "attention.output.dense.weight"
FFN_OUTPUT = LAYER + "output.dense.weight"


def _batch(seed, labels=3):
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, 99, (BATCH, SEQ)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[6:, 5:] = 0
    types = np.zeros_like(ids)
    types[:, 3:] = 1
    return ids, mask, types, rng.integers(0, labels, BATCH).astype(np.int32)


def _random_arrays(config, num_labels=3, seed=0):
    rng = np.random.default_rng(seed)
    model = BertForSequenceClassification(config, num_labels)
    return {name: rng.normal(scale=0.3, size=p.shape).astype(np.float32) for name, p in named_parameters(model).items()}


_MODELS = {}


def _model(config, arrays, num_labels=3):
    """A classifier of this shape holding `arrays`; one per shape, so each shape compiles once."""
    if (config, num_labels) not in _MODELS:
        _MODELS[config, num_labels] = BertForSequenceClassification(config, num_labels)
        _MODELS[config, num_labels].set_train(False)
    model = _MODELS[config, num_labels]
    for name, param in named_parameters(model).items():
        param.set_data(Tensor(arrays[name]))
    return model


def _outputs(model, batch):
    logits, hidden, _ = model(*(Tensor(x) for x in batch[:3]))
    return logits.asnumpy(), hidden[-1].asnumpy()


def _cross_entropy(logits, labels):
    shifted = logits - logits.max(-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    return -log_probs[np.arange(len(labels)), labels].mean()


def _zeroed(arrays, config, prune_heads, keep_rows):
    """The reference: the original tensors with the pruned heads' and rows' contributions set to zero."""
    head_size = config.hidden_size // config.num_attention_heads
    zeroed = {name: value.copy() for name, value in arrays.items()}
    for layer in range(config.num_hidden_layers):
        left = [h for h in range(config.num_attention_heads) if h not in dict(config.pruned_heads).get(layer, ())]
        for head in prune_heads.get(layer, ()):
            position = left.index(head)
            zeroed[ATTENTION_OUTPUT.format(layer)][:, position * head_size:(position + 1) * head_size] = 0.0
        dropped = np.setdiff1d(np.arange(config.intermediate_size), keep_rows[layer])
        zeroed[FFN_OUTPUT.format(layer)][:, dropped] = 0.0
    return zeroed


def test_config_pruned_heads(student_config):
    config = student_config.replace(pruned_heads={"1": [3, 0], "0": []})
    assert config.pruned_heads == ((1, (0, 3)),)
    assert [config.num_heads_in_layer(i) for i in range(2)] == [4, 2]
    assert config.to_dict()["pruned_heads"] == {"1": [0, 3]}
    assert "pruned_heads" not in student_config.to_dict()  # unpruned configs are written as before
    assert BertConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    model = BertForSequenceClassification(config.for_inference(), 3)
    params = named_parameters(model)
    assert params[LAYER.format(1) + "attention.attention.query_layer.weight"].shape == (16, 32)
    assert params[ATTENTION_OUTPUT.format(1)].shape == (32, 16)
    assert params[ATTENTION_OUTPUT.format(0)].shape == (32, 32)
    _, _, scores = model(*(Tensor(x) for x in _batch(0)[:3]))
    assert [s.shape[1] for s in scores] == [4, 2]
    with pytest.raises(ValueError, match="pruned_heads: layer 2 is not in 0..1"):
        student_config.replace(pruned_heads={2: [0]})
    with pytest.raises(ValueError, match="names heads outside 0..3"):
        student_config.replace(pruned_heads={0: [4]})
    with pytest.raises(ValueError, match="all 4 heads of layer 0 are removed"):
        student_config.replace(pruned_heads={0: [0, 1, 2, 3]})


def test_compacted_model_equals_zeroed_heads_and_rows(student_config):
    config = student_config.for_inference()
    arrays = _random_arrays(config)
    batch = _batch(1)
    prune = {0: [1, 3], 1: [0]}
    rng = np.random.default_rng(2)
    keep = [np.sort(rng.choice(29, 17, replace=False)) for _ in range(2)]
    reference = _outputs(_model(config, _zeroed(arrays, config, prune, keep)), batch)
    small_arrays, small_config = structured.compact(arrays, config, prune, keep)
    assert small_config.pruned_heads == ((0, (1, 3)), (1, (0,))) and small_config.intermediate_size == 17
    small = _model(small_config, small_arrays)
    for got, expected in zip(_outputs(small, batch), reference):
        np.testing.assert_allclose(got, expected, atol=2e-5)
    assert np.abs(reference[0] - _outputs(_model(config, arrays), batch)[0]).max() > 1e-3

    # a second round names heads by their original numbers and keeps the first round's removals
    again_arrays, again_config = structured.compact(small_arrays, small_config, {0: [2]}, None)
    assert again_config.pruned_heads == ((0, (1, 2, 3)), (1, (0,)))
    twice = _zeroed(_zeroed(arrays, config, prune, keep), config, {0: [2]}, keep)
    np.testing.assert_allclose(_outputs(_model(again_config, again_arrays), batch)[0],
                               _outputs(_model(config, twice), batch)[0], atol=2e-5)
    with pytest.raises(ValueError, match=r"layer 0: heads \[1\] are not in the model any more"):
        structured.compact(small_arrays, small_config, {0: [1]}, None)

    # zero-filled heads: the full-size model computes the same, and so does transformers' BERT
    full_arrays, full_config = structured.expand_pruned_heads(again_arrays, again_config)
    assert full_config.pruned_heads == () and full_arrays[ATTENTION_OUTPUT.format(0)].shape == (32, 32)
    expected = _outputs(_model(again_config, again_arrays), batch)[0]
    np.testing.assert_allclose(_outputs(_model(full_config, full_arrays), batch)[0], expected, atol=2e-5)
    np.testing.assert_allclose(_transformers_logits(full_config, full_arrays, batch), expected, atol=1e-4)


def _transformers_logits(config, arrays, batch):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from src.hf_convert import HF, OURS, rename
    hf_config = transformers.BertConfig(**{k: v for k, v in config.to_dict().items() if k != "compute_type"},
                                        num_labels=3)
    model = transformers.BertForSequenceClassification(hf_config).eval()
    state = {}
    for name, value in arrays.items():
        hf_name = rename(name, OURS, HF)
        state[hf_name if hf_name.startswith("classifier.") else "bert." + hf_name] = torch.tensor(value)
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and all("position_ids" in name for name in missing)
    with torch.no_grad():
        return model(*(torch.tensor(x, dtype=torch.long) for x in batch[:3])).logits.numpy()


def test_gate_gradients_match_finite_differences(student_config):
    """dL/dgate_h against (L(head scaled by 1 + e) - L(1 - e)) / 2e computed with plain models."""
    config = student_config.for_inference().replace(pruned_heads={1: [2]})
    arrays = _random_arrays(config, seed=4)
    batches = [_batch(5)]
    one_heads, one_rows = structured.gate_importance(config, arrays, batches[:1], num_labels=3)
    assert [h.shape for h in one_heads] == [(4,), (3,)] and [r.shape for r in one_rows] == [(29,), (29,)]
    heads, rows = structured.gate_importance(config, arrays, [batches[0], batches[0]], num_labels=3)
    for layer in range(2):  # summed over batches
        np.testing.assert_allclose(heads[layer], 2 * one_heads[layer], rtol=1e-6)
        np.testing.assert_allclose(rows[layer], 2 * one_rows[layer], rtol=1e-6)

    model = _model(config, arrays)
    eps, head_size = 1e-2, 8

    def loss_with(name, columns, scale):
        scaled = dict(arrays)
        scaled[name] = arrays[name].copy()
        scaled[name][:, columns] *= scale
        for param_name, param in named_parameters(model).items():
            param.set_data(Tensor(scaled[param_name]))
        return _cross_entropy(_outputs(model, batches[0])[0], batches[0][3])

    def derivative(name, columns):
        return (loss_with(name, columns, 1 + eps) - loss_with(name, columns, 1 - eps)) / (2 * eps)

    for layer, position in ((0, 0), (0, 3), (1, 1)):
        numeric = derivative(ATTENTION_OUTPUT.format(layer), slice(position * head_size, (position + 1) * head_size))
        assert abs(numeric) > 1e-4
        np.testing.assert_allclose(one_heads[layer][position], abs(numeric), rtol=2e-2, atol=1e-5)
    for layer, row in ((0, 5), (1, 28)):
        numeric = derivative(FFN_OUTPUT.format(layer), [row])
        np.testing.assert_allclose(one_rows[layer][row], numeric, rtol=2e-2, atol=1e-5)


def test_choosing_heads_and_rows(student_config):
    config = student_config.replace(pruned_heads={1: [2]})
    importance = [np.array([0.9, 0.1, 0.5, 0.2]), np.array([0.05, 0.7, 0.01])]  # layer 1: heads 0, 1, 3 left
    assert structured.heads_to_prune(config, importance, 3) == {0: [1], 1: [0, 3]}
    # ranks across layers but never takes a layer's last head
    assert structured.heads_to_prune(config, importance, 5) == {0: [1, 2, 3], 1: [0, 3]}
    with pytest.raises(ValueError, match="cannot prune 6 heads: 0..5 can go"):
        structured.heads_to_prune(config, importance, 6)
    normalised = structured.head_importance([np.array([3.0, 4.0])])
    np.testing.assert_allclose(normalised[0], [0.6, 0.8])
    keep = structured.rows_to_keep([np.array([0.3, -1.0, 2.0, 0.5]), np.array([1.0, 2.0, 3.0, 0.0])], 2)
    assert [k.tolist() for k in keep] == [[2, 3], [1, 2]]
    with pytest.raises(ValueError, match="intermediate_size 5 must be in 1..4"):
        structured.rows_to_keep([np.zeros(4)], 5)
    arrays = _random_arrays(student_config.for_inference())
    magnitude = structured.row_importance("magnitude", arrays)
    w_in = arrays[LAYER.format(1) + "intermediate.weight"]
    w_out = arrays[FFN_OUTPUT.format(1)]
    np.testing.assert_allclose(magnitude[1], np.sqrt((w_in ** 2).sum(1) * (w_out ** 2).sum(0)), rtol=1e-5)
    np.testing.assert_array_equal(structured.row_importance("movement", arrays, [np.array([1.0, -2.0])])[0],
                                  [-1.0, 2.0])
    with pytest.raises(ValueError, match="needs row_gradients"):
        structured.row_importance("movement", arrays)
    with pytest.raises(ValueError, match="layer 1: removing heads .* leaves it none"):
        structured.compact(arrays, student_config.for_inference(),
                           {1: list(range(student_config.num_attention_heads))}, None)


def test_command_line(tmp_path, student_config, capsys):
    config = student_config.for_inference()
    arrays = _random_arrays(config, num_labels=2, seed=8)
    checkpoint = tmp_path / "task.ckpt"
    save_checkpoint(checkpoint, {name: Tensor(value) for name, value in arrays.items()},
                    {MODEL_CONFIG: json.dumps(config.to_dict()), NUM_LABELS: 2, TASK: "sst2", SEQ_LENGTH: SEQ})
    records = tmp_path / "dev.mindrecord"
    with RecordsWriter(records, "mindrecord", SEQ, np.int32) as writer:
        for seed in (9, 10):
            ids, mask, types, labels = _batch(seed, labels=2)
            writer.write({"input_ids": ids, "input_mask": mask, "segment_ids": types, "label_ids": labels})
    output = tmp_path / "compact.ckpt"
    structured.main(["--checkpoint", str(checkpoint), "--data", str(records), "--batch_size", "8",
                     "--prune_heads", "3", "--intermediate_size", "20", "--output", str(output),
                     "--importance_output", str(tmp_path / "importance.json")])
    printed = capsys.readouterr().out
    model, metadata = load_model(output)
    assert metadata["task"] == "sst2" and model.bert.config.intermediate_size == 20
    assert sum(len(heads) for _, heads in model.bert.config.pruned_heads) == 3
    importance = json.loads((tmp_path / "importance.json").read_text())
    assert len(importance["heads"]) == 2 and len(importance["rows"][0]) == 29
    assert "removed 3 heads" in printed and "intermediate_size 29 -> 20" in printed
    logits = model(*(Tensor(x) for x in _batch(9, labels=2)[:3]))[0].asnumpy()
    assert logits.shape == (BATCH, 2) and np.isfinite(logits).all()

    def fails(argv, message):
        with pytest.raises(SystemExit):
            run_cli(structured.main, argv)
        assert message in capsys.readouterr().err

    fails(["--checkpoint", str(checkpoint), "--prune_heads", "2", "--output", str(tmp_path / "x.ckpt")],
          "--data is needed")
    fails(["--checkpoint", str(output), "--prune_heads", "9", "--data", str(records), "--output",
           str(tmp_path / "x.ckpt")], "cannot prune 9 heads")
    fails(["--checkpoint", str(output), "--prune_heads", "1", "--data", str(records), "--max_batches", "-1",
           "--output", str(tmp_path / "x.ckpt")], "--max_batches is -1: give a non-negative number")
    fails(["--checkpoint", str(output), "--output", str(output)], f"--output {output} is the same file as --checkpoint")
    assert not (tmp_path / "x.ckpt").exists()
