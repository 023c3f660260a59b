"""Counting, baking and compact storage of pruned checkpoints, through their command lines."""
import json
import stat

import numpy as np
import pytest
from mindspore import Tensor
from safetensors import safe_open
from safetensors.numpy import save_file

from conftest import BATCH, SEQ
from src.cli import run_cli
from src.checkpoint import MODEL_CONFIG, NUM_LABELS, PRUNING_METHOD, TASK, assign_parameters, load_checkpoint, \
    load_model, named_parameters, save_checkpoint, split_metadata
from src.prune import bake, count, sparse_format
from src.prune.apply import apply_masking, restore_mask_scores, set_threshold
from src.prune.settings import PruningConfig
from src.tinybert_model import BertForSequenceClassification

PRUNED = ("attention.attention.query_layer", "attention.attention.key_layer", "attention.attention.value_layer",
          "attention.output.dense", "intermediate", "output.dense")


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x.astype(np.float64)))


def _inputs():
    rng = np.random.default_rng(3)
    ids = rng.integers(1, 99, (BATCH, SEQ)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[5:, 4:] = 0
    return Tensor(ids), Tensor(mask), Tensor(np.zeros_like(ids))


def _metadata(config, num_labels, task):
    """The metadata with which load_model rebuilds a classifier."""
    return {MODEL_CONFIG: json.dumps(config.to_dict()), NUM_LABELS: num_labels, TASK: task}


def _masked_checkpoint(path, config, method, threshold, seed=0):
    """A masked model with random weights and scores, saved as the prune phase saves; its eval logits."""
    model = BertForSequenceClassification(config, num_labels=3)
    rng = np.random.default_rng(seed)
    for name, param in named_parameters(model).items():  # larger weights than the init: visible logits
        param.set_data(Tensor(rng.normal(scale=0.2, size=param.shape).astype(np.float32)))
    settings = PruningConfig(pruning_method=method, mask_init="uniform", mask_scale=3.0,
                             initial_threshold=threshold, final_threshold=threshold)
    apply_masking(model, settings)
    set_threshold(model, threshold)
    model.set_train(False)
    logits = model(*_inputs())[0].asnumpy()
    save_checkpoint(path, named_parameters(model), dict(_metadata(config, 3, "sst2"), **{PRUNING_METHOD: method}))
    return logits


def _logits_of(path):
    model, metadata = load_model(path)
    return model(*_inputs())[0].asnumpy(), metadata


def _arrays(path):
    """A checkpoint's tensors as numpy and its metadata, as stored (a masked one unbaked)."""
    tensors, metadata = split_metadata(load_checkpoint(path, keep_masks=True))
    return {name: value.asnumpy() for name, value in tensors.items()}, metadata


def test_count_bake_and_sparse_storage_of_movement_pruning(tmp_path, student_config, capsys):
    config = student_config.for_inference()
    masked = tmp_path / "masked.ckpt"
    masked_logits = _masked_checkpoint(masked, config, "topK", 0.1)
    arrays, _ = _arrays(masked)

    count.main(["--checkpoint", str(masked), "--output", str(tmp_path / "counts.json")])
    table = capsys.readouterr().out
    report = json.loads((tmp_path / "counts.json").read_text())
    assert report["pruning_method"] == "topK" and report["threshold"] == pytest.approx(0.1)  # read from the file
    assert [row["layer"] for row in report["layers"]] == [0, 1]
    for row in report["layers"]:
        for short, path in zip(("query", "key", "value", "attention_output", "intermediate", "output"), PRUNED):
            scores = arrays[f"bert.bert_encoder.layers.{row['layer']}.{path}.mask_scores"]
            assert row[short] == int(np.float32(0.1) * np.float32(scores.size)) / scores.size
    pruned_total = 2 * (4 * 32 * 32 + 2 * 32 * 29)
    encoder_other = 2 * (4 * 32 + 29 + 32 + 4 * 32)  # biases (q, k, v, attention output, intermediate, output), 2 LayerNorms
    assert report["pruned_weights"]["total"] == pruned_total
    assert report["encoder"]["total"] == pruned_total + encoder_other
    assert report["encoder"]["kept"] == report["pruned_weights"]["kept"] + encoder_other
    assert "pruned weights: " in table and f"{100 * report['pruned_weights']['fraction']:.2f}%" in table

    plain = tmp_path / "plain.ckpt"
    bake.main(["--checkpoint", str(masked), "--output", str(plain), "--sparse_output", str(tmp_path / "p.safetensors")])
    out = capsys.readouterr().out
    plain_logits, metadata = _logits_of(plain)
    np.testing.assert_allclose(plain_logits, masked_logits, atol=1e-5)
    baked, _ = _arrays(plain)
    assert not [name for name in baked if "mask_scores" in name or "pruning_threshold" in name]
    assert metadata["task"] == "sst2" and PRUNING_METHOD not in metadata
    assert set(baked) == {name for name in arrays if "mask_scores" not in name and "pruning_threshold" not in name}

    count.main(["--checkpoint", str(plain), "--pruning_method", "nonzero", "--output", str(tmp_path / "baked.json")])
    assert json.loads((tmp_path / "baked.json").read_text())["pruned_weights"] == report["pruned_weights"]
    # another method's masks from topK's scores would be meaningless: refused, nothing written
    for module, extra in ((count, []), (bake, ["--output", str(tmp_path / "m.ckpt")])):
        with pytest.raises(ValueError, match="the checkpoint was pruned with topK, not magnitude: its masks are "
                                             r"topK's, so leave --pruning_method out \(or give topK\)"):
            module.main(["--checkpoint", str(masked), "--pruning_method", "magnitude", *extra])
    assert not (tmp_path / "m.ckpt").exists()

    assert f"wrote {plain} ({plain.stat().st_size:,} bytes)" in out
    assert f"wrote {tmp_path / 'p.safetensors'} ({(tmp_path / 'p.safetensors').stat().st_size:,} bytes" in out
    loaded, sparse_metadata = sparse_format.load_sparse(tmp_path / "p.safetensors")
    assert set(loaded) == set(baked) and sparse_metadata == metadata
    for name, value in baked.items():
        np.testing.assert_array_equal(loaded[name], value)  # float32 CSR: bit for bit
    assert (tmp_path / "p.safetensors").stat().st_size < 0.6 * plain.stat().st_size
    # an ordinary output, as the checkpoints are (safetensors alone would leave it 0600)
    assert stat.S_IMODE((tmp_path / "p.safetensors").stat().st_mode) == stat.S_IMODE(plain.stat().st_mode)

    sparse_format.main(["pack", "--checkpoint", str(plain), "--output", str(tmp_path / "q.safetensors"),
                        "--values", "int8"])
    quantised, _ = sparse_format.load_sparse(tmp_path / "q.safetensors")
    with safe_open(str(tmp_path / "q.safetensors"), "numpy") as handle:
        layout = json.loads(handle.metadata()["tinybert_sparse"])["sparse"]
    assert set(layout) == {name for name in baked if any(p + ".weight" in name for p in PRUNED)}
    for name, value in baked.items():
        if name in layout:
            row_scale = np.abs(value).max(axis=1, keepdims=True) / 127
            assert (np.abs(quantised[name] - value) <= row_scale / 2 + 1e-7).all()
            assert (quantised[name][value == 0] == 0).all()  # pruned weights stay pruned
        else:
            np.testing.assert_array_equal(quantised[name], value)
    assert (tmp_path / "q.safetensors").stat().st_size < (tmp_path / "p.safetensors").stat().st_size

    sparse_format.main(["unpack", "--input", str(tmp_path / "q.safetensors"), "--output", str(tmp_path / "q.ckpt")])
    int8_logits, _ = _logits_of(tmp_path / "q.ckpt")
    assert 0 < np.abs(int8_logits - masked_logits).max() < 2e-2


@pytest.mark.parametrize("method,threshold", [("l0", None), ("sigmoied_threshold", 0.7)])
def test_bake_equals_masked_for_gates_and_soft_movement(tmp_path, student_config, method, threshold, capsys):
    config = student_config.for_inference()
    masked = tmp_path / "masked.ckpt"
    masked_logits = _masked_checkpoint(masked, config, method, 1.0 if method == "l0" else threshold)
    arrays, _ = _arrays(masked)
    plain = tmp_path / "plain.ckpt"
    bake.main(["--checkpoint", str(masked), "--output", str(plain)])
    np.testing.assert_allclose(_logits_of(plain)[0], masked_logits, atol=1e-5)
    count.main(["--checkpoint", str(masked), "--output", str(tmp_path / "counts.json")])
    report = json.loads((tmp_path / "counts.json").read_text())
    scores = arrays[f"bert.bert_encoder.layers.1.{PRUNED[4]}.mask_scores"]
    if method == "l0":  # open gates: clamp(sigmoid * 1.2 - 0.1, 0, 1) > 0
        expected = np.mean(_sigmoid(scores) * 1.2 - 0.1 > 0)
    else:
        expected = np.mean(_sigmoid(scores) > threshold)
    assert report["layers"][1]["intermediate"] == pytest.approx(expected)
    assert 0 < expected < 1


def test_a_masked_checkpoint_loads_baked_into_a_plain_model_and_its_scores_into_a_masked_one(
        tmp_path, student_config):
    config = student_config.for_inference()
    masked = tmp_path / "masked.ckpt"
    masked_logits = _masked_checkpoint(masked, config, "topK", 0.3)
    arrays, _ = _arrays(masked)
    # every consumer of a plain model (eval, export, predict, Hugging Face export) reads it through
    # load_checkpoint: the model it gets is the masked model, not the unpruned weights
    logits, metadata = _logits_of(masked)
    np.testing.assert_allclose(logits, masked_logits, atol=1e-5)
    assert PRUNING_METHOD not in metadata
    baked, _ = split_metadata(load_checkpoint(masked))
    name = f"bert.bert_encoder.layers.1.{PRUNED[0]}.weight"
    scores = arrays[name.replace("weight", "mask_scores")]
    kept = scores >= np.sort(scores, axis=None)[::-1][int(np.float32(0.3) * np.float32(scores.size)) - 1]  # top 30%
    np.testing.assert_array_equal(baked[name].asnumpy(), arrays[name] * kept)
    assert not [n for n in baked if n.endswith(("mask_scores", "pruning_threshold"))]

    def masked_model(method):
        model = BertForSequenceClassification(config, num_labels=3)
        tensors, stored = split_metadata(load_checkpoint(masked, keep_masks=True))
        assign_parameters(named_parameters(model), tensors, "test")  # the unmasked weights, as the prune phase
        apply_masking(model, PruningConfig(pruning_method=method, initial_threshold=0.3, final_threshold=0.3))
        return model, restore_mask_scores(model, tensors, stored, str(masked))

    model, restored = masked_model("topK")
    assert restored == 12  # 2 layers x 6 matrices
    model.set_train(False)
    np.testing.assert_allclose(model(*_inputs())[0].asnumpy(), masked_logits, atol=1e-5)
    with pytest.raises(ValueError, match="was pruned with topK, not sigmoied_threshold: continue it with "
                                         "--pruning.pruning_method=topK"):
        masked_model("sigmoied_threshold")


def test_magnitude_on_a_plain_checkpoint_and_errors(tmp_path, student_config, capsys):
    model = BertForSequenceClassification(student_config, num_labels=2)
    plain = tmp_path / "plain.ckpt"
    save_checkpoint(plain, named_parameters(model), _metadata(student_config, 2, ""))
    count.main(["--checkpoint", str(plain), "--pruning_method", "magnitude", "--threshold", "0.25",
                "--output", str(tmp_path / "c.json")])
    report = json.loads((tmp_path / "c.json").read_text())
    weight = named_parameters(model)[f"bert.bert_encoder.layers.0.{PRUNED[3]}.weight"].asnumpy()
    assert report["layers"][0]["attention_output"] == int(np.float32(0.25) * weight.size) / weight.size

    def fails(module, argv, message):
        with pytest.raises(SystemExit) as exit_info:
            run_cli(module.main, argv)
        assert exit_info.value.code == 2 and message in capsys.readouterr().err

    fails(count, ["--checkpoint", str(plain)], f"{plain} is a plain checkpoint (it records no pruning method): "
                                               "--pruning_method nonzero counts its non-zero weights")
    fails(bake, ["--checkpoint", str(plain), "--output", str(tmp_path / "b.ckpt")],
          "does not record its pruning method (it is not a masked checkpoint the prune phase wrote)")
    # nothing pruned: the compact file holds every matrix dense, and bake says so
    bake.main(["--checkpoint", str(plain), "--output", str(tmp_path / "all.ckpt"), "--pruning_method", "magnitude",
               "--threshold", "1", "--sparse_output", str(tmp_path / "all.safetensors")])
    assert ": 0 matrices as CSR (float32 values), " in capsys.readouterr().out
    assert (tmp_path / "all.safetensors").stat().st_size > 0.99 * (tmp_path / "all.ckpt").stat().st_size
    fails(count, ["--checkpoint", str(plain), "--pruning_method", "topK", "--threshold", "0.5"],
          "has no mask_scores")
    fails(count, ["--checkpoint", str(plain), "--pruning_method", "magnitude"], "give --threshold")
    fails(count, ["--checkpoint", str(plain), "--pruning_method", "magnitude", "--threshold", "1.5"],
          "--threshold 1.5 must be in (0, 1] for magnitude")
    fails(bake, ["--checkpoint", str(plain), "--output", str(plain), "--pruning_method", "magnitude",
                 "--threshold", "0.5"], f"--output {plain} is the same file as --checkpoint: give each its own file")
    fails(bake, ["--checkpoint", str(plain), "--output", str(tmp_path / "b.ckpt"), "--sparse_output",
                 str(tmp_path / "b.ckpt")], f"--sparse_output {tmp_path / 'b.ckpt'} is the same file as --output")
    assert not (tmp_path / "b.ckpt").exists()
    fails(sparse_format, ["pack", "--checkpoint", str(plain), "--output", str(plain)], "is the same file as --checkpoint")
    fails(count, ["--checkpoint", str(tmp_path / "none.ckpt")], "does not exist")
    fails(count, ["--checkpoint", str(plain), "--pruning_method", "nonzero", "--threshold", "0.1"],
          "--threshold does not apply to --pruning_method nonzero")
    fails(count, ["--checkpoint", str(plain), "--pruning_method", "movement"], "invalid choice: 'movement'")
    (tmp_path / "text.safetensors").write_text("not a safetensors file")
    fails(sparse_format, ["unpack", "--input", str(tmp_path / "text.safetensors"), "--output",
                          str(tmp_path / "o.ckpt")], "is not a safetensors file")
    save_file({"x": np.zeros(3, np.float32)}, str(tmp_path / "other.safetensors"))
    fails(sparse_format, ["unpack", "--input", str(tmp_path / "other.safetensors"), "--output",
                          str(tmp_path / "o.ckpt")], "not a sparse model written by src.prune.sparse_format")
    assert not (tmp_path / "o.ckpt").exists()


def test_csr_round_trip_and_index_types():
    rng = np.random.default_rng(1)
    matrix = rng.normal(size=(37, 300)).astype(np.float32) * (rng.random((37, 300)) < 0.1)
    matrix[4] = 0.0  # an empty row
    parts = sparse_format.to_csr(matrix)
    assert parts["indices"].dtype == np.uint16 and parts["indptr"].dtype == np.uint16
    assert parts["values"].size == np.count_nonzero(matrix)
    np.testing.assert_array_equal(sparse_format.from_csr(parts, matrix.shape), matrix)
    narrow = sparse_format.to_csr(matrix[:, :200])
    assert narrow["indices"].dtype == np.uint8
    int8 = sparse_format.to_csr(matrix, "int8")
    assert int8["values"].dtype == np.int8 and int8["scale"][4] == 1.0
    with pytest.raises(ValueError, match="values 'int4' must be one of float32, int8"):
        sparse_format.to_csr(matrix, "int4")
    restored = sparse_format.from_csr(int8, matrix.shape)
    assert (np.abs(restored - matrix) <= int8["scale"][:, None] / 2 + 1e-7).all()
