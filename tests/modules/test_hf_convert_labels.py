"""Hugging Face conversion carries what the weights alone do not: label order and names, casing, the
model config; and export takes the config a run wrote."""
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import mindspore as ms
import pytest

from src.checkpoint import load_checkpoint, model_metadata, named_parameters, save_checkpoint, split_metadata
from src.config import load_config, save_config
from src.hf_convert import export_hf, import_hf
from src.tinybert_model import BertConfig, BertForSequenceClassification
from src.tokenization import WordPieceTokenizer

ROOT = Path(__file__).resolve().parents[2]
TINY_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"word{i}" for i in range(60)]
CASED_VOCAB = "[PAD] [UNK] [CLS] [SEP] [MASK] The Paris France Marie visited in May . the".split()
HF_MNLI = {0: "entailment", 1: "neutral", 2: "contradiction"}  # the Hub's usual MNLI order
# glue_to_records writes MNLI as contradiction=0, entailment=1, neutral=2: output j of the imported
# model must be HF output ORDER[j].
ORDER = [2, 0, 1]


@pytest.fixture
def libraries():
    torch = pytest.importorskip("torch", reason="building Hugging Face models needs torch")
    transformers = pytest.importorskip("transformers", reason="building Hugging Face models needs transformers")
    return torch, transformers


def hf_classifier(libraries, student_config, folder, id2label, vocab=TINY_VOCAB, tokenizer_config=None):
    """A random Hugging Face BertForSequenceClassification saved as the Hub ships one."""
    torch, transformers = libraries
    torch.manual_seed(0)
    values = {k: v for k, v in student_config.to_dict().items() if k != "compute_type"}
    config = transformers.BertConfig(**values, id2label=id2label, label2id={v: k for k, v in id2label.items()})
    model = transformers.BertForSequenceClassification(config).eval()
    model.save_pretrained(str(folder), safe_serialization=True)
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    if tokenizer_config is not None:
        (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config), encoding="utf-8")
    return model


def inputs(config):
    rng = np.random.default_rng(0)
    ids = rng.integers(5, len(TINY_VOCAB), (4, 9)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[1, 6:] = 0
    return ids, mask, (np.arange(9) >= 5).astype(np.int32)[None].repeat(4, 0)


def hf_logits(libraries, model, ids, mask, types):
    torch, _ = libraries
    with torch.no_grad():
        return model(input_ids=torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(mask, dtype=torch.long),
                     token_type_ids=torch.tensor(types, dtype=torch.long)).logits.numpy()


def our_logits(folder, config, ids, mask, types):
    tensors, metadata = split_metadata(load_checkpoint(folder / "model.ckpt"))
    model = BertForSequenceClassification(config.for_inference(), tensors["dense_1.weight"].shape[0])
    for name, param in named_parameters(model).items():
        param.set_data(tensors[name])
    model.set_train(False)
    return model(ms.Tensor(ids), ms.Tensor(mask), ms.Tensor(types))[0].asnumpy(), metadata


def test_mnli_classifier_is_reordered_to_the_task_and_exported_with_its_names(libraries, student_config, tmp_path):
    _, transformers = libraries
    reference = hf_classifier(libraries, student_config, tmp_path / "hf", HF_MNLI)
    ids, mask, types = inputs(student_config)
    expected = hf_logits(libraries, reference, ids, mask, types)

    import_hf(tmp_path / "hf", tmp_path / "kept")
    kept, metadata = our_logits(tmp_path / "kept", student_config, ids, mask, types)
    assert np.abs(kept - expected).max() < 1e-4
    assert json.loads(metadata["label_names"]) == ["entailment", "neutral", "contradiction"]

    import_hf(tmp_path / "hf", tmp_path / "mnli", task="mnli")
    aligned, metadata = our_logits(tmp_path / "mnli", student_config, ids, mask, types)
    assert np.abs(aligned - expected[:, ORDER]).max() < 1e-4
    assert json.loads(metadata["label_names"]) == ["contradiction", "entailment", "neutral"]
    assert BertConfig.from_dict(json.loads(metadata["model_config"])) == BertConfig.from_json_file(
        tmp_path / "mnli" / "config.json")

    export_hf(tmp_path / "mnli" / "model.ckpt", None, tmp_path / "mnli" / "vocab.txt", tmp_path / "back")
    written = json.loads((tmp_path / "back" / "config.json").read_text())
    assert written["id2label"] == {"0": "contradiction", "1": "entailment", "2": "neutral"}
    assert written["label2id"] == {"contradiction": 0, "entailment": 1, "neutral": 2}
    back = transformers.BertForSequenceClassification.from_pretrained(str(tmp_path / "back")).eval()
    assert np.abs(hf_logits(libraries, back, ids, mask, types) - expected[:, ORDER]).max() < 1e-4


def test_label_names_that_are_not_the_tasks_stop_the_import(libraries, student_config, tmp_path):
    hf_classifier(libraries, student_config, tmp_path / "hf", {0: "yes", 1: "maybe", 2: "no"})
    with pytest.raises(ValueError, match=r"labels its outputs yes, maybe, no, which are not the labels of task mnli "
                                         r"\(contradiction, entailment, neutral\): pass --label_map MODEL_LABEL="
                                         r"TASK_LABEL,... to say which is which"):
        import_hf(tmp_path / "hf", tmp_path / "out", task="mnli")
    assert not (tmp_path / "out").exists()
    import_hf(tmp_path / "hf", tmp_path / "out", task="mnli",
              label_map={"yes": "entailment", "maybe": "neutral", "no": "contradiction"})
    _, metadata = split_metadata(load_checkpoint(tmp_path / "out" / "model.ckpt"))
    assert json.loads(metadata["label_names"]) == ["contradiction", "entailment", "neutral"]


def test_classifier_without_names_keeps_its_order(libraries, student_config, tmp_path):
    hf_classifier(libraries, student_config, tmp_path / "hf", {0: "LABEL_0", 1: "LABEL_1"})
    with pytest.raises(ValueError, match="has 2 outputs but task mnli has 3"):
        import_hf(tmp_path / "hf", tmp_path / "out", task="mnli")
    import_hf(tmp_path / "hf", tmp_path / "sst2", task="sst2")
    _, metadata = split_metadata(load_checkpoint(tmp_path / "sst2" / "model.ckpt"))
    assert json.loads(metadata["label_names"]) == ["0", "1"]


def test_casing_travels_with_the_imported_model(libraries, student_config, tmp_path):
    hf_classifier(libraries, student_config, tmp_path / "cased", HF_MNLI, vocab=CASED_VOCAB,
                  tokenizer_config={"do_lower_case": False, "model_max_length": 64})
    import_hf(tmp_path / "cased", tmp_path / "teacher")
    settings = json.loads((tmp_path / "teacher" / "tokenizer_config.json").read_text())
    assert settings["do_lower_case"] is False and settings["model_max_length"] == 64
    tokenizer = WordPieceTokenizer(str(tmp_path / "teacher" / "vocab.txt"))
    assert tokenizer.casing == f"do_lower_case false from {tmp_path / 'teacher' / 'tokenizer_config.json'}"
    ids = tokenizer.encode("Marie visited France in May .", seq_length=8)[0]
    assert [CASED_VOCAB[i] for i in ids] == "[CLS] Marie visited France in May . [SEP]".split()

    hf_classifier(libraries, student_config, tmp_path / "uncased", HF_MNLI)  # no tokenizer_config.json
    import_hf(tmp_path / "uncased", tmp_path / "teacher2")
    assert json.loads((tmp_path / "teacher2" / "tokenizer_config.json").read_text())["do_lower_case"] is True

    export_hf(tmp_path / "teacher" / "model.ckpt", None, tmp_path / "teacher" / "vocab.txt", tmp_path / "back")
    assert json.loads((tmp_path / "back" / "tokenizer_config.json").read_text())["do_lower_case"] is False


def test_export_takes_the_config_yaml_a_run_wrote(student_config, tmp_path):
    (tmp_path / "student.json").write_text(json.dumps(student_config.to_dict()))
    (tmp_path / "vocab.txt").write_text("\n".join(TINY_VOCAB) + "\n")
    cfg = load_config([f"--student.model={tmp_path / 'student.json'}", "--seq_length=32",
                       "--config_path=src/task_configs/mnli.yaml"])
    save_config(cfg, tmp_path / "run" / "td2" / "config.yaml")
    ms.set_seed(0)
    student = BertForSequenceClassification(student_config, 3)
    save_checkpoint(tmp_path / "run" / "td2" / "student_best.ckpt", named_parameters(student))  # no metadata

    result = subprocess.run([sys.executable, "-m", "src.hf_convert", "export", "--checkpoint",
                             str(tmp_path / "run" / "td2" / "student_best.ckpt"), "--config",
                             str(tmp_path / "run" / "td2" / "config.yaml"), "--vocab_file",
                             str(tmp_path / "vocab.txt"), "--output_dir", str(tmp_path / "hf")],
                            cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    written = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert written["hidden_size"] == student_config.hidden_size
    assert written["id2label"] == {"0": "contradiction", "1": "entailment", "2": "neutral"}


def test_export_names_the_outputs_given_with_labels(libraries, student_config, tmp_path):
    """--labels renames the classifier's outputs in config.json and the model card (SST-2's own are 0, 1);
    a list that is not one distinct name per output is refused before anything is written."""
    _, transformers = libraries
    model = BertForSequenceClassification(student_config, 2)
    save_checkpoint(tmp_path / "student.ckpt", named_parameters(model), model_metadata(model, 2, ["0", "1"], "sst2"))
    (tmp_path / "vocab.txt").write_text("\n".join(TINY_VOCAB) + "\n")
    files = (tmp_path / "student.ckpt", None, tmp_path / "vocab.txt")
    export_hf(*files, tmp_path / "hf", labels=["negative", "positive"])
    loaded = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "hf")
    assert loaded.config.id2label == {0: "negative", 1: "positive"}
    assert loaded.config.label2id == {"negative": 0, "positive": 1}
    assert "- Labels (output order): `negative`, `positive`." in (tmp_path / "hf" / "README.md").read_text()
    for labels in (["a", "b", "c"], ["a", "a"], ["a", ""]):
        with pytest.raises(ValueError, match="give 2 distinct names, one per output"):
            export_hf(*files, tmp_path / "other", labels=labels)
    assert not (tmp_path / "other").exists()


@pytest.mark.parametrize("config_text, message", [
    ("hidden_size: 32\n", r"student.yaml.json is not valid JSON \(Expecting value at line 1\): --config takes a "
                          r"preset name, our config.json \(as hf_convert import writes it\) or a run's config.yaml"),
    (None, r"does not record its model config: pass --config \(the student's preset name, its config.json, or "
           r"the run's OUTPUT_DIR/PHASE/config.yaml\)"),
])
def test_export_config_errors_are_one_line(student_config, tmp_path, config_text, message):
    save_checkpoint(tmp_path / "student.ckpt", named_parameters(BertForSequenceClassification(student_config, 2)))
    (tmp_path / "vocab.txt").write_text("\n".join(TINY_VOCAB) + "\n")
    command = [sys.executable, "-m", "src.hf_convert", "export", "--checkpoint", str(tmp_path / "student.ckpt"),
               "--vocab_file", str(tmp_path / "vocab.txt"), "--output_dir", str(tmp_path / "hf")]
    if config_text is not None:
        (tmp_path / "student.yaml.json").write_text(config_text)
        command += ["--config", str(tmp_path / "student.yaml.json")]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1
    assert result.stderr.startswith("error: ")
    assert re.search(message, result.stderr), result.stderr
    assert not (tmp_path / "hf").exists()
