"""Fine-tuning steps on the real MiniLM match transformers + torch.optim.AdamW step for step.

The whole training step is checked at once: gradients through every layer, loss scaling, global-norm
clipping, the warm-up/decay schedule and the optimizer's update.
"""
from types import SimpleNamespace

import numpy as np
import mindspore as ms
import pytest

from src.checkpoint import assign_parameters, load_checkpoint, named_parameters, split_metadata
from src.hf_convert import import_hf
from src.optimizer import build_optimizer
from src.distill.teacher import no_teacher
from src.tinybert_for_gd_td import BertTrainWithLossScaleCell, DistillationLoss, TrainingStep, make_scale_update_cell
from src.tinybert_model import BertConfig, BertForSequenceClassification

PAIRS = [("The company said profits rose.", "Profits went up, the firm said."),
         ("He left early.", "The meeting ran late into the night and nobody could leave before ten."),
         ("Rain is expected tomorrow.", "Tomorrow will probably be rainy."),
         ("She sold the house.", "The cat sat on the mat.")]
LABELS = [1, 0, 1, 0]
LR, WEIGHT_DECAY, STEPS, WARMUP = 1e-4, 0.01, 6, 3  # warm-up 3 steps, then linear decay to 0 at step 6


def torch_schedule(step):
    """src/lr_schedule.py's multiplier at optimizer step `step` (0-based)."""
    return (step + 1) / WARMUP if step < WARMUP else 1.0 - (step - WARMUP) / (STEPS - WARMUP)


def test_fine_tuning_steps_match_transformers(minilm_dir, tmp_path):
    """Ours in two micro-batches of 2 (gradients summed, one update on their mean) against the
    reference's whole batch of 4: cross-entropy is a mean over examples, so the updates are the same.
    (test_tinybert_for_gd_td.py shows micro-batches give the whole batch's step on our side.)"""
    torch = pytest.importorskip("torch", reason="the reference training step needs torch")
    transformers = pytest.importorskip("transformers", reason="the reference training step needs transformers")
    torch.manual_seed(0)
    reference = transformers.BertForSequenceClassification.from_pretrained(
        str(minilm_dir), num_labels=2, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    import_hf(minilm_dir, tmp_path / "minilm")
    ours = BertForSequenceClassification(
        BertConfig.from_json_file(tmp_path / "minilm" / "config.json").for_inference(), 2)
    tensors, _ = split_metadata(load_checkpoint(tmp_path / "minilm" / "model.ckpt"))
    assign_parameters(named_parameters(ours), tensors, "MiniLM", allow_missing=("dense_1.",))
    ours.dense_1.weight.set_data(ms.Tensor(reference.classifier.weight.detach().numpy()))
    ours.dense_1.bias.set_data(ms.Tensor(reference.classifier.bias.detach().numpy()))

    phase = SimpleNamespace(learning_rate=LR, end_learning_rate=0.0, warmup_ratio=WARMUP / STEPS, power=1.0,
                            weight_decay=WEIGHT_DECAY, eps=1e-6, bias_correction=True)
    loss = DistillationLoss(ours, ("label",), SimpleNamespace(prediction_loss="soft_cross_entropy", label_loss="cross_entropy", temperature_schedule="constant", temperature_beta=1.0, temperature_gamma=2.0, temperature_squared=False))
    schedule_values = ms.Tensor([0.0, 1.0, 1.0, 0.0], ms.float32)  # plain fine-tuning: the label term alone
    scale = SimpleNamespace(enabled=True, init_value=2.0 ** 16, factor=2, window=1000)
    step = TrainingStep(BertTrainWithLossScaleCell(loss, build_optimizer(loss.trainable_params(), phase, STEPS),
                                                   make_scale_update_cell(scale), clip_norm=1.0), micro_batches=2)
    step.set_train(True)
    no_decay = [p for n, p in reference.named_parameters() if "bias" in n or "LayerNorm" in n]
    decay = [p for n, p in reference.named_parameters() if not ("bias" in n or "LayerNorm" in n)]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": WEIGHT_DECAY},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=LR, eps=1e-6)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, torch_schedule)

    tokenizer = transformers.AutoTokenizer.from_pretrained(str(minilm_dir))
    batch = tokenizer(*zip(*PAIRS), padding="max_length", max_length=32, return_tensors="np")
    ids, mask, types = (batch[k].astype(np.int32) for k in ("input_ids", "attention_mask", "token_type_ids"))
    labels = np.array(LABELS, np.int32)
    ours_losses, reference_losses = [], []
    inputs = tuple(ms.Tensor(x) for x in (ids, mask, types, labels))
    for index in range(STEPS):
        value, _, overflow, _ = step(index, no_teacher, schedule_values, inputs, inputs)
        assert not overflow
        ours_losses.append(value)
        output = reference(input_ids=torch.tensor(ids).long(), attention_mask=torch.tensor(mask).long(),
                           token_type_ids=torch.tensor(types).long(), labels=torch.tensor(labels).long())
        output.loss.backward()
        torch.nn.utils.clip_grad_norm_(reference.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        reference_losses.append(output.loss.item())

    assert ours_losses[-1] < ours_losses[0] - 0.05, ours_losses  # it learned something
    np.testing.assert_allclose(ours_losses, reference_losses, rtol=1e-4)
    np.testing.assert_allclose(ours.dense_1.weight.asnumpy(), reference.classifier.weight.detach().numpy(),
                               atol=1e-5)
    ours_query = named_parameters(ours)["bert.bert_encoder.layers.0.attention.attention.query_layer.weight"]
    reference_query = reference.bert.encoder.layer[0].attention.self.query.weight.detach().numpy()
    np.testing.assert_allclose(ours_query.asnumpy(), reference_query, atol=1e-5)
