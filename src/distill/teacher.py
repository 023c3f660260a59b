"""Teacher sources: what the training step is given as the teacher's side of every loss.

A source is called with the batch's columns (the teacher's own token columns in place of the
student's when the records carry them: `dataset.teacher_and_student_batches`) and returns a tuple of
tensors, one teacher feature per intermediate match (a pair for pair losses), then the logits when
the phase has a prediction loss.
  LiveTeacher    runs the frozen teacher on the batch.
  TeacherEnsemble  several teachers of one task: features by match, the weighted mean of their logits.
  no_teacher     a placeholder, for supervised fine-tuning.
  CachedTeacher  looks the logits up by the batch's example_id in a file computed once
                 (`teacher_logits_cache`): a logits-only phase then runs no teacher at all.
"""
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import mindspore as ms
from mindspore import nn
from tqdm import tqdm

from src.atomic_files import atomic_path
from src.distill.features import RELATIONS, feature_from, feature_source, relation_projection


def freeze(model):
    """The teacher is never trained: no gradients, and built without dropout (config.for_inference)."""
    for param in model.get_parameters():
        param.requires_grad = False
    model.set_train(False)
    return model


class _Encoder(nn.Cell):
    """Embeddings and the first layers of the teacher's own BERT as one graph, returning only the
    hidden states and attention scores a source keeps (sorted (kind, index) pairs, `feature_source`'s
    keys), then the last hidden state and the mask bias."""

    def __init__(self, bert, layers, kept):
        super().__init__(auto_prefix=False)
        self.bert = bert
        self.layers = list(bert.bert_encoder.layers)[:layers]
        self.kept = kept

    def construct(self, input_ids, attention_mask, token_type_ids):
        hidden, mask_bias = self.bert.embed(input_ids, attention_mask, token_type_ids)
        hiddens, scores = (hidden,), ()
        for layer in self.layers:
            hidden, layer_scores = layer(hidden, mask_bias)
            hiddens += (hidden,)
            scores += (layer_scores,)
        kept = ()
        for kind, index in self.kept:
            kept += (hiddens[index] if kind == "hidden" else scores[index],)
        return kept, hidden, mask_bias


class _Head(nn.Cell):
    """The task model's head: sequence output -> logits (pooled first where the head needs it)."""

    def __init__(self, model):
        super().__init__(auto_prefix=False)
        self.model = model

    def construct(self, sequence_output):
        return self.model.head(sequence_output, self.model.bert.pool(sequence_output))


class _Feature(nn.Cell):
    """One teacher feature from its source tensor (attention probabilities, [CLS], a relation)."""

    def __init__(self, feature, projection, heads):
        super().__init__(auto_prefix=False)
        self.feature, self.projection, self.heads = feature, projection, heads

    def construct(self, source, mask_bias):
        return feature_from(self.feature, source, mask_bias, self.projection, self.heads)


class LiveTeacher:
    """The frozen teacher, run before each training step as one graph over its own weights.

    Outside the training step's graph, so nothing of it is kept for the student's backward pass, and
    only as deep as the deepest feature it must give (all layers when logits are needed). One graph
    rather than a graph per layer: on the CPU twelve launches of a BERT-base layer cost 0.7-1.1 s a
    step more than one launch of twelve layers (bench/GD_STEP.md). Without the fused CPU kernels
    MindSpore's CPU backend keeps the buffers of every layer's transposes and mask additions: a
    BERT-base forward at batch 32 x 128 as one graph peaks at 4.4 GB instead of 2.1 GB (the process,
    weights included; `TINYBERT_FUSED_OPS=0`, or no compiler).

    Args:
        teacher: BertModel, or a task model with `.bert` and `.head` (needed for logits).
        matches (tuple[Match]): the intermediate matches whose teacher features to return.
        with_logits (bool): also return the classifier's logits, last.
    """

    def __init__(self, teacher, matches=(), with_logits=False):
        bert = teacher.bert if hasattr(teacher, "head") else teacher
        self.matches = tuple(matches)
        self.num_heads = bert.config.num_attention_heads
        self.head = _Head(teacher) if with_logits else None
        self.sources = sorted({feature_source(m.feature, layer) for m in self.matches for layer in m.layer_T})
        last = bert.config.num_hidden_layers if with_logits else max(
            [index + (kind == "scores") for kind, index in self.sources] or [0])
        self.encoder = _Encoder(bert, last, tuple(self.sources))
        self.feature_cells = {}
        for match in self.matches:
            for layer in match.layer_T:
                if match.feature in ("cls", "attention_probs") or match.feature in RELATIONS:
                    projection = relation_projection(bert, match.feature, layer) if match.feature in RELATIONS \
                        else None
                    heads = match.relation_heads or self.num_heads
                    self.feature_cells[(match.feature, layer, heads)] = _Feature(match.feature, projection, heads)
        for cell in (self.encoder, self.head, *self.feature_cells.values()):
            if cell is not None:
                cell.set_train(False)

    def _feature(self, match, layer, kept, mask_bias):
        source = kept[feature_source(match.feature, layer)]
        cell = self.feature_cells.get((match.feature, layer, match.relation_heads or self.num_heads))
        return source if cell is None else cell(source, mask_bias)

    def __call__(self, input_ids, attention_mask, token_type_ids, *unused):
        features, hidden, mask_bias = self.encoder(input_ids, attention_mask, token_type_ids)
        kept = dict(zip(self.sources, features))
        outputs = []
        for match in self.matches:
            features = tuple(self._feature(match, layer, kept, mask_bias) for layer in match.layer_T)
            outputs.append(features[0] if len(features) == 1 else features)
        if self.head is not None:
            outputs.append(self.head(hidden))
        # mutable: a tuple of tensors passed to a graph is otherwise a constant, recompiled each step
        return ms.mutable(tuple(outputs))


def combine_logits(logits, weights):
    """The ensemble's soft-target logits: the weighted mean of the teachers' logits.

    logits: list of (B, C) arrays, one per teacher; weights: one non-negative number per teacher.
    The mean of logits (TextBrewer's MultiTeacherDistiller averages logits too) makes softmax targets
    a normalised weighted geometric mean of the teachers' distributions: confident where they agree,
    flatter where they disagree, at any temperature. Returns (B, C) float32.
    """
    weights = np.asarray(weights, np.float64)
    return (np.tensordot(weights, np.stack(logits).astype(np.float64), axes=1) / weights.sum()).astype(np.float32)


class TeacherEnsemble:
    """Several teachers of one task: each match's feature from the teacher it names (`Match.teacher`),
    then the weighted mean of their logits (`combine_logits`)."""

    def __init__(self, teachers, weights, matches=(), with_logits=False):
        self.weights, self.with_logits = list(weights), with_logits
        self.sources = [LiveTeacher(teacher, [m for m in matches if m.teacher == i], with_logits)
                        for i, teacher in enumerate(teachers)]
        position = [0] * len(teachers)
        self.slots = []  # (teacher, index in its outputs) of each match, in match order
        for match in matches:
            self.slots.append((match.teacher, position[match.teacher]))
            position[match.teacher] += 1

    def __call__(self, input_ids, attention_mask, token_type_ids, *unused):
        outputs = [source(input_ids, attention_mask, token_type_ids) for source in self.sources]
        features = [outputs[teacher][index] for teacher, index in self.slots]
        if self.with_logits:
            logits = combine_logits([output[-1].asnumpy() for output in outputs], self.weights)
            features.append(ms.Tensor(logits))
        return ms.mutable(tuple(features))


def no_teacher(*columns):
    """The source of a phase without a teacher (fine-tuning): an unused placeholder tensor."""
    return ms.mutable((ms.Tensor(0.0, ms.float32),))


class CachedTeacher:
    """The teacher's logits looked up by example id: (N, C) float32 array, row i for example i."""

    def __init__(self, logits):
        self.logits = logits

    def __call__(self, input_ids, attention_mask, token_type_ids, *columns):
        example_id = columns[-1].asnumpy()
        return ms.mutable((ms.Tensor(self.logits[example_id]),))


def _file_digest(paths):
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def cache_key(teacher_checkpoint, record_files, model_config):
    """Identity of a logits cache: the teacher's weights, the training records and the teacher shape."""
    return hashlib.sha256(json.dumps({
        "teacher": _file_digest([teacher_checkpoint]), "records": _file_digest(record_files),
        "model": model_config}, sort_keys=True).encode()).hexdigest()


def load_or_build_cache(cache_dir, key, batches, teacher, logger, total=None):
    """Logits of `teacher` for every example of `batches`, from `cache_dir` if a cache with `key` is
    there, else computed now, with a progress bar on stderr, and written there (atomically).

    batches: iterable of (input_ids, attention_mask, token_type_ids, ..., example_id) tensors; total:
    their number, for the progress bar (an augmented set's forward passes take minutes).
    Caches in the folder with other keys (other teachers, changed weights or records) are left alone
    and named in the log.
    """
    cache_dir = Path(cache_dir)
    path = cache_dir / f"teacher_logits_{key[:24]}.npy"
    if path.is_file():
        logger.info("teacher logits from cache %s", path)
        return np.load(path)
    others = sorted(p.name for p in cache_dir.glob("teacher_logits_*.npy")) if cache_dir.is_dir() else []
    if others:
        logger.info("teacher logits cache %s: for another teacher or other records, not used", ", ".join(others))
    source = LiveTeacher(teacher, with_logits=True)
    logger.info("teacher logits: one forward pass over the training records%s, cached in %s for later runs",
                f" ({total} batches)" if total else "", path)
    rows = {}
    for batch in tqdm(batches, total=total, desc="teacher logits", unit=" batches", file=sys.stderr, mininterval=5.0):
        logits = source(*batch[:3])[-1].asnumpy()
        for example_id, row in zip(batch[-1].asnumpy(), logits):
            rows[int(example_id)] = row
    if sorted(rows) != list(range(len(rows))):
        raise ValueError("example_id values of the training records are not 0..N-1: convert the data again")
    logits = np.stack([rows[i] for i in range(len(rows))]).astype(np.float32)
    with atomic_path(path) as tmp:
        np.save(tmp, logits)
    logger.info("teacher logits of %d examples cached in %s", len(logits), path)
    return logits
