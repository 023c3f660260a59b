"""deploy: the ONNX Runtime folder read back, the int8 accuracy check against our own ONNX Runtime run."""
import json

import numpy as np
import mindspore as ms
import onnx
from onnx import numpy_helper
import onnxruntime
import pytest

from src.deploy import deploy, int8_check, main
from src.predict import Predictor
from src.records_writer import RecordsWriter
from src.tinybert_model import LogitsOnly
from src.tokenization import WordPieceTokenizer
from tests.modules.test_predict import LABELS, SEQ, TEXTS, make_classifier, tiny_config, write_vocab

DEV_SIZE = 60


def dev_rows(tokenizer, seed=1):
    """Token ids of random word sequences of varied length, padded to SEQ."""
    rng = np.random.default_rng(seed)
    words = [w for w in tokenizer.token_ids(["the cat sat on the mat , a dog ran . good bad fun boring plot"])[0]]
    ids = [list(rng.choice(words, rng.integers(2, SEQ - 2))) for _ in range(DEV_SIZE)]
    return tokenizer.build_inputs(ids, None, SEQ)


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    """A random 3-label classifier, dev records labelled with its own predictions, and its deploy folder."""
    root = tmp_path_factory.mktemp("deploy")
    (root / "teacher").mkdir()
    vocab = write_vocab(root / "teacher")
    tokenizer = WordPieceTokenizer(vocab)
    model = make_classifier(root / "run" / "student_best.ckpt", tiny_config(tokenizer.vocab_size), LABELS)
    input_ids, attention_mask, token_type_ids = dev_rows(tokenizer)
    ms.set_context(mode=ms.PYNATIVE_MODE)
    try:
        network = LogitsOnly(model)
        network.set_train(False)
        logits = network(*[ms.Tensor(x) for x in (input_ids, attention_mask, token_type_ids)]).asnumpy()
    finally:
        ms.set_context(mode=ms.GRAPH_MODE)
    labels = logits.argmax(axis=1).astype(np.int32)  # the float model is right on every example
    with RecordsWriter(root / "dev.mindrecord", "mindrecord", SEQ, label_dtype=np.int32) as writer:
        writer.write({"input_ids": input_ids, "input_mask": attention_mask, "segment_ids": token_type_ids,
                      "label_ids": labels})
    described = deploy(root / "run" / "student_best.ckpt", vocab, root / "deploy", root / "dev.mindrecord")
    return {"root": root, "vocab": vocab, "folder": root / "deploy", "described": described, "labels": labels,
            "inputs": (input_ids, attention_mask, token_type_ids)}


def test_the_folder_holds_what_a_user_ships(deployed):
    folder = deployed["folder"]
    assert sorted(p.name for p in folder.iterdir()) == ["model.int8.onnx", "model.json", "model.mindir", "model.onnx",
                                                        "tokenizer_config.json", "vocab.txt"]
    assert (folder / "vocab.txt").read_bytes() == deployed["vocab"].read_bytes()
    assert json.loads((folder / "tokenizer_config.json").read_text())["do_lower_case"] is True
    described = json.loads((folder / "model.json").read_text())
    assert described == json.loads(json.dumps(deployed["described"]))
    assert described["labels"] == LABELS and described["max_seq_length"] == SEQ
    assert [i["name"] for i in described["inputs"]] == ["input_ids", "attention_mask", "token_type_ids"]
    assert described["outputs"][0]["shape"] == ["batch", 3] and described["mindir_input_shape"] == [-1, SEQ]
    session = onnxruntime.InferenceSession(str(folder / "model.int8.onnx"), providers=["CPUExecutionProvider"])
    assert [(i.name, i.shape) for i in session.get_inputs()] == [(i["name"], i["shape"]) for i in described["inputs"]]
    int8 = onnx.load(str(folder / "model.int8.onnx")).graph
    assert {"MatMulInteger", "DynamicQuantizeLinear"} <= {node.op_type for node in int8.node}  # activations at run time
    weight_bytes = [sum(numpy_helper.to_array(i).nbytes for i in graph.initializer)
                    for graph in (int8, onnx.load(str(folder / "model.onnx")).graph)]
    assert weight_bytes[0] < 0.3 * weight_bytes[1]  # int8 weights and embeddings, a few float scales and biases


def test_int8_check_matches_our_own_onnx_runtime_run(deployed):
    check = deployed["described"]["int8_check"]
    attention_mask = deployed["inputs"][1]
    # Batches as the check reads them: 32 rows in file order, cut to the longest row. Dynamic int8
    # quantization takes each activation's range over the whole batch, so its logits depend on the batch.
    batches = []
    for start in range(0, DEV_SIZE, 32):
        width = attention_mask[start:start + 32].sum(axis=1).max()
        batches.append({name: x[start:start + 32, :width] for name, x in
                        zip(("input_ids", "attention_mask", "token_type_ids"), deployed["inputs"])})
    accuracy = {}
    for name, key in (("model.onnx", "float32"), ("model.int8.onnx", "int8")):
        session = onnxruntime.InferenceSession(str(deployed["folder"] / name), providers=["CPUExecutionProvider"])
        logits = np.concatenate([session.run(None, batch)[0] for batch in batches])
        accuracy[key] = float((logits.argmax(1) == deployed["labels"]).mean())
    assert check["metric"] == "accuracy" and check["examples"] == DEV_SIZE
    assert check["float32"] == pytest.approx(accuracy["float32"]) and accuracy["float32"] > 0.95
    assert check["int8"] == pytest.approx(accuracy["int8"])
    assert check["drop_points"] == pytest.approx(100 * (accuracy["float32"] - accuracy["int8"]), abs=1e-3)
    assert check["drop_points"] <= check["max_drop_points"] == 1.0


def test_predict_runs_the_folder_with_its_own_vocabulary_and_labels(deployed):
    from_checkpoint = Predictor(deployed["root"] / "run" / "student_best.ckpt", deployed["vocab"]).records(TEXTS)
    for model in (deployed["folder"], deployed["folder"] / "model.mindir", deployed["folder"] / "model.int8.onnx"):
        records = Predictor(model).records(TEXTS)
        if model.name != "model.int8.onnx":
            assert [r["label"] for r in records] == [r["label"] for r in from_checkpoint]
        assert set(records[0]["probabilities"]) == set(LABELS)


def test_int8_check_refuses_a_larger_drop():
    labels = np.array([0, 1, 1, 0])
    exact = np.array([[2.0, 0.0], [0.0, 2.0], [0.0, 2.0], [2.0, 0.0]])
    one_wrong = exact.copy()
    one_wrong[1] = [2.0, 0.0]
    with pytest.raises(ValueError, match=r"loses 25.00 points of dev accuracy \(1.0000 -> 0.7500 on 4 examples\)"):
        int8_check(exact, one_wrong, labels, "accuracy", 1.0)
    result = int8_check(exact, one_wrong, labels, "accuracy", 30.0)
    assert result["agreement"] == 0.75


def test_bad_inputs_leave_nothing_behind(deployed, tmp_path):
    checkpoint = deployed["root"] / "run" / "student_best.ckpt"
    with pytest.raises(ValueError, match="--dev_path is needed"):
        main(["--checkpoint", str(checkpoint), "--vocab_file", str(deployed["vocab"]), "--output_dir", str(tmp_path / "d")])
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="holds more than a deploy folder"):
        deploy(checkpoint, deployed["vocab"], tmp_path / "busy", int8=False)
    long = 80  # more than the model's 64 positions
    with RecordsWriter(tmp_path / "long.mindrecord", "mindrecord", long, label_dtype=np.int32) as writer:
        writer.write({"input_ids": np.ones((2, long), np.int32), "input_mask": np.ones((2, long), np.int32),
                      "segment_ids": np.zeros((2, long), np.int32), "label_ids": np.zeros(2, np.int32)})
    with pytest.raises(ValueError, match=r"store sequences of length 80 but the model has 64 positions: convert the "
                                         rf"dev set again with --seq_length {SEQ}"):
        deploy(checkpoint, deployed["vocab"], tmp_path / "out", tmp_path / "long.mindrecord", mindir=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy", "long.mindrecord", "long.mindrecord.db"]


def test_dev_records_of_another_length_give_the_same_check(deployed, tmp_path):
    """The ONNX files take any length: dev records padded to 48 instead of the training length 16 are
    read at 48, cut to each batch's longest row, and give the same int8 check."""
    padded = [np.pad(x, ((0, 0), (0, 48 - SEQ))) for x in deployed["inputs"]]
    with RecordsWriter(tmp_path / "dev48.mindrecord", "mindrecord", 48, label_dtype=np.int32) as writer:
        writer.write({"input_ids": padded[0], "input_mask": padded[1], "segment_ids": padded[2],
                      "label_ids": deployed["labels"]})
    described = deploy(deployed["root"] / "run" / "student_best.ckpt", deployed["vocab"], tmp_path / "deploy48",
                       tmp_path / "dev48.mindrecord", mindir=False)
    check, expected = described["int8_check"], deployed["described"]["int8_check"]
    assert described["max_seq_length"] == SEQ and check["dev_path"] == str(tmp_path / "dev48.mindrecord")
    for key in ("examples", "float32", "int8", "drop_points"):
        assert check[key] == pytest.approx(expected[key]), key
