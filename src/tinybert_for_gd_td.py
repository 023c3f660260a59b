"""The distillation loss Cell and the loss-scaled training step.

One loss Cell serves every phase (TextBrewer's total loss):
    total = kd_weight * prediction_loss(student logits, teacher logits, temperature)
          + hard_label_weight * label_loss(student logits, gold labels)
          + sum over matches of weight_i * feature_loss_i(student feature_i, teacher feature_i)
A phase switches terms on (src/phases.py): general distillation and TinyBERT's task phase 1 use the
matches (Jiao et al. 2019: attention and hidden states of mapped layers), phase 2 the prediction
and label terms, teacher fine-tuning the label term alone.
"""
import numpy as np
import mindspore as ms
from mindspore import Parameter, Tensor, nn, ops
from mindspore.common.initializer import TruncatedNormal
from mindspore.communication import get_group_size

from src.distill.features import RELATIONS, feature_from, feature_source, relation_projection
from src.distill.matches import SHARED_PROJECTION
from src.distill.schedules import TEMPERATURE_SCHEDULES
from src.dropout import set_dropout_step
from src.losses import get_loss


def make_projection(in_width, out_width, initializer_range):
    """A learnt linear map from student to teacher width (TinyBERT's W_h, TextBrewer's proj)."""
    return nn.Dense(in_width, out_width, weight_init=TruncatedNormal(initializer_range))


def projection_names(matches):
    """Checkpoint name of each match's projection: fit_dense (shared), proj_<i> (own), or None."""
    return tuple(match.proj if match.proj in (None, SHARED_PROJECTION) else f"proj_{i}"
                 for i, match in enumerate(matches))


def make_projections(matches, student_config, teacher_config):
    """{name: Dense} of the projections the matches use, in first-use order."""
    projections = {}
    for match, name in zip(matches, projection_names(matches)):
        if name is not None and name not in projections:
            projections[name] = make_projection(student_config.hidden_size, teacher_config.hidden_size,
                                                student_config.initializer_range)
    return projections


class _FeatureLoss(nn.Cell):
    """weight x loss(student feature, teacher feature, attention_mask) for one match."""

    def __init__(self, match):
        super().__init__()
        self.loss = get_loss("feature", match.loss, "match loss")
        self.weight = match.weight

    def construct(self, student_feature, teacher_feature, attention_mask):
        return self.weight * self.loss(student_feature, teacher_feature, attention_mask)


class DistillationLoss(nn.Cell):
    """The total distillation loss of one phase, and its components.

    Args:
        student (nn.Cell): BertModel (no task head) or a task model with `.bert` and
            `.head(sequence_output, pooled_output)` -> logits: (B, C) sentence classes, (B, T, C)
            token classes, (B, 2, T) answer start/end positions (src/tinybert_model.py).
        terms (tuple[str]): which of "matches", "prediction", "label" the phase uses.
        distill: the `distill` config section (prediction_loss, label_loss, temperature schedule).
        matches (tuple[Match]): intermediate matches (used when "matches" is in terms).
        projections (dict[str, nn.Dense]): from `make_projections(matches, ...)`.
        regression (bool): one output, MSE losses instead of the classification ones.
        regularizer (nn.Cell): Movement Pruning's mask penalty (no inputs, a scalar), weighted by
            the schedule's regu_lambda; None outside pruning.

    Inputs: teacher_outputs (tuple: a teacher feature per match, then the teacher's logits when
    "prediction" is in terms), schedule (Tensor (4,): kd_weight, hard_label_weight, temperature,
    regu_lambda in force), input_ids, attention_mask, token_type_ids (B, T), then the label columns (label_ids; for
    QA start_positions and end_positions) and any further columns.
    Returns (total loss, components): components (n_matches + 3,) holds each weighted match loss,
    then the weighted prediction, label and pruning-regularisation terms (0 where a term is off).
    """

    def __init__(self, student, terms, distill, matches=(), projections=None, regression=False, regularizer=None):
        super().__init__()
        self.regularizer = regularizer
        self.student = student
        self.has_head = hasattr(student, "head")
        self.task = getattr(student, "task", "")
        encoder = student.bert if self.has_head else student
        self.use_matches = "matches" in terms and len(matches) > 0
        self.use_prediction = "prediction" in terms
        self.use_label = "label" in terms
        projections = projections or {}
        names = list(projections)
        self.projections = nn.CellList(list(projections.values()))
        self.num_matches = len(matches) if self.use_matches else 0
        # Per match, constants the graph unrolls over: feature, its source in each student layer,
        # the projection's index (-1: none), relation heads.
        self.match_plan = tuple(
            (m.feature, tuple(feature_source(m.feature, layer) for layer in m.layer_S),
             names.index(name) if name is not None else -1,
             m.relation_heads or encoder.config.num_attention_heads)
            for m, name in zip(matches, projection_names(matches)))[:self.num_matches]
        self.relation_projections = nn.CellList([
            relation_projection(encoder, m.feature, layer) if m.feature in RELATIONS else nn.Identity()
            for m in matches[:self.num_matches] for layer in m.layer_S])
        self.feature_losses = nn.CellList([_FeatureLoss(m) for m in matches[:self.num_matches]])
        prediction = "logits_mse" if regression else distill.prediction_loss
        self.prediction_loss = get_loss("prediction", prediction, "distill.prediction_loss")
        self.label_loss = get_loss("label", "mse" if regression else distill.label_loss, "distill.label_loss")
        self.temperature = TEMPERATURE_SCHEDULES[distill.temperature_schedule]
        self.temperature_beta, self.temperature_gamma = distill.temperature_beta, distill.temperature_gamma
        self.temperature_squared = distill.temperature_squared

    def _student_feature(self, plan, slot, hidden_states, attention_scores, mask_bias, layer_index):
        feature, sources, projection, heads = plan
        kind, index = sources[slot]
        source = hidden_states[index] if kind == "hidden" else attention_scores[index]
        value = feature_from(feature, source, mask_bias, self.relation_projections[layer_index], heads)
        if projection >= 0:
            value = self.projections[projection](value)
        return value

    def _prediction_mask(self, logits, attention_mask, columns):
        """Where soft targets count: every sentence; in NER the labelled first word-pieces (or every
        real token when no labels are read); both rows of a QA span."""
        if self.task == "token_classification":
            if self.use_label:
                return (columns[0] != -100).astype(ms.float32)
            return attention_mask.astype(ms.float32)
        return ops.ones(logits.shape[:-1], ms.float32)

    def construct(self, teacher_outputs, schedule, input_ids, attention_mask, token_type_ids, *columns):
        encoder = self.student.bert if self.has_head else self.student
        sequence_output, pooled_output, hidden_states, attention_scores = encoder(
            input_ids, attention_mask, token_type_ids)
        logits = self.student.head(sequence_output, pooled_output) if self.has_head else None
        mask_bias = (1.0 - attention_mask.astype(ms.float32)).reshape(attention_mask.shape[0], 1, 1, -1) * -10000.0
        components = ()
        layer_index = 0
        for i in range(self.num_matches):
            plan = self.match_plan[i]
            if len(plan[1]) == 1:
                student_feature = self._student_feature(plan, 0, hidden_states, attention_scores, mask_bias,
                                                        layer_index)
            else:
                student_feature = (
                    self._student_feature(plan, 0, hidden_states, attention_scores, mask_bias, layer_index),
                    self._student_feature(plan, 1, hidden_states, attention_scores, mask_bias, layer_index + 1))
            layer_index += len(plan[1])
            components += (self.feature_losses[i](student_feature, teacher_outputs[i], attention_mask),)
        zero = ops.zeros((), ms.float32)
        prediction, label = zero, zero
        if self.task == "question_answering":
            # The classes of a span are positions: padded ones are out of the softmax on both sides.
            span_bias = mask_bias.reshape(mask_bias.shape[0], 1, -1)
            logits = logits + span_bias
        if self.use_prediction:
            teacher_logits = teacher_outputs[-1]
            if self.task == "question_answering":
                teacher_logits = teacher_logits + span_bias
            temperature = self.temperature(logits, teacher_logits, schedule[2], self.temperature_beta,
                                           self.temperature_gamma)
            prediction = self.prediction_loss(logits, teacher_logits, temperature,
                                              self._prediction_mask(logits, attention_mask, columns))
            if self.temperature_squared:
                # The mean of T^2 over examples: exact for a constant temperature, an average
                # for the per-example flsw/cwsm ones.
                prediction = prediction * ops.square(temperature).mean()
            prediction = schedule[0] * prediction
        if self.use_label:
            labels = ops.stack(columns[:2], axis=1) if self.task == "question_answering" else columns[0]
            label = schedule[1] * self.label_loss(logits, labels)
        regularization = zero
        if self.regularizer is not None:
            regularization = schedule[3] * self.regularizer()
        components = ops.stack(components + (prediction, label, regularization))
        return components.sum(), components


class BertTrainWithLossScaleCell(nn.Cell):
    """One optimizer step with dynamic loss scaling and global-norm clipping.

    MindSpore's TrainOneStepWithLossScaleCell reads NPU float-status registers and fails on CPU;
    this cell detects overflow from the gradients' global norm (isfinite), which every backend has.
    On overflow the step is skipped and the scale update cell lowers the scale.
    Inputs: those of the loss Cell. Returns (loss, components, overflow, loss scale used).
    Called, it is the whole step as one graph; the training loop runs the same two halves
    (`scaled_gradients`, `apply_gradients`) as two graphs through `TrainingStep`.
    """

    def __init__(self, network, optimizer, scale_update_cell, clip_norm):
        super().__init__(auto_prefix=False)
        self.network = network
        self.optimizer = optimizer
        self.weights = optimizer.parameters
        self.grad = ops.GradOperation(get_by_list=True, sens_param=True)
        self.scale_update_cell = scale_update_cell
        self.loss_scale = Parameter(Tensor(scale_update_cell.get_loss_scale(), ms.float32), name="loss_scale")
        self.clip_norm = clip_norm
        self.distributed = ms.get_auto_parallel_context("parallel_mode") in (ms.ParallelMode.DATA_PARALLEL,
                                                                             ms.ParallelMode.HYBRID_PARALLEL)
        if self.distributed:
            # Averages gradients across ranks once (the zoo divides by the device count a second time).
            self.grad_reducer = nn.DistributedGradReducer(self.weights, mean=True, degree=get_group_size())
            self.all_reduce = ops.AllReduce()

    def scaled_gradients(self, scale, *inputs):
        """(loss, components, gradients of loss x scale with respect to the trained weights)."""
        loss, components = self.network(*inputs)
        sens = (ops.fill(loss.dtype, loss.shape, scale), ops.zeros_like(components))
        return loss, components, self.grad(self.network, self.weights)(*inputs, sens)

    def apply_gradients(self, grads, scale):
        """Average scaled gradients over ranks and, unless they overflowed, unscale and clip them to
        `clip_norm` in one multiply and update; returns the overflow flag (after the scale update cell
        has seen it).

        One dot product per gradient gives the global norm (as ops.clip_by_global_norm's), and the
        norm is the overflow check: it is finite exactly when every gradient is, or else the sum of
        squares of the scaled gradients exceeded float32 (a global norm above 1.8e19 / scale), which
        counts as overflow too. With the fused Adam the whole update of MiniLM's 22.7M parameters
        takes 68 ms on a 2-core CPU, against 561 ms for dividing by the scale, isfinite on every
        gradient, ops.clip_by_global_norm and an element-wise AdamW (bench/GD_STEP.md, "Optimizer").
        """
        if self.distributed:
            grads = self.grad_reducer(grads)
        squares = [ops.tensor_dot(g.reshape(-1), g.reshape(-1), 1) for g in grads]
        norm = ops.sqrt(ops.stack(squares).sum()) / scale
        overflow = ops.logical_not(ops.isfinite(norm))
        if self.distributed:
            overflow = self.all_reduce(overflow.astype(ms.float32)) > 0
        overflow = self.scale_update_cell(self.loss_scale, overflow)
        if not overflow:
            factor = self.clip_norm / ops.maximum(norm, self.clip_norm) / scale
            overflow = ops.depend(overflow, self.optimizer(tuple(g * factor for g in grads)))
        return overflow

    def construct(self, *inputs):
        scale = self.loss_scale * 1.0  # a copy: the update below must not change what we return
        loss, components, grads = self.scaled_gradients(scale, *inputs)
        overflow = self.apply_gradients(grads, scale)
        return loss, components, overflow, scale


class _Gradients(nn.Cell):
    """Forward and backward of one batch through a BertTrainWithLossScaleCell's network.
    Inputs: the loss Cell's. Returns (loss, components, loss-scaled gradients)."""

    def __init__(self, train_cell):
        super().__init__(auto_prefix=False)
        self.train_cell = train_cell

    def construct(self, *inputs):
        return self.train_cell.scaled_gradients(self.train_cell.loss_scale * 1.0, *inputs)


class _AccumulateGradients(nn.Cell):
    """Forward and backward of one micro-batch through a BertTrainWithLossScaleCell's network: its
    loss-scaled gradients are added into `accumulated` (first=1: written over them instead).
    Inputs: first (float32 scalar Tensor, 1 or 0), then the loss Cell's. Returns (loss, components)."""

    def __init__(self, train_cell):
        super().__init__(auto_prefix=False)
        self.train_cell = train_cell
        self.accumulated = train_cell.weights.clone(prefix="accumulated", init="zeros")

    def construct(self, first, *inputs):
        loss, components, grads = self.train_cell.scaled_gradients(self.train_cell.loss_scale * 1.0, *inputs)
        keep = 1.0 - first
        added = ()
        for total, grad in zip(self.accumulated, grads):
            added += (ops.assign(total, total * keep + grad),)
        return ops.depend(loss, added), components


class _ApplyGradients(nn.Cell):
    """The optimizer step on loss-scaled gradients summed over `micro_batches` slices (their mean is
    applied). Input: the gradients, a tuple in the order of train_cell.weights. Returns (overflow,
    loss scale used)."""

    def __init__(self, train_cell, micro_batches):
        super().__init__(auto_prefix=False)
        self.train_cell = train_cell
        self.micro_batches = float(micro_batches)

    def construct(self, grads):
        scale = self.train_cell.loss_scale * 1.0  # the mean over slices: unscaled by scale x slices
        return self.train_cell.apply_gradients(grads, scale * self.micro_batches), scale


class TrainingStep:
    """One optimizer step on one batch: the teacher's outputs, the loss, its gradients, the update.

    The step runs as two compiled graphs: the forward and backward pass, compiled for each input
    shape (each padding bucket), and the update, compiled once. One graph for both (the train cell's
    own `construct`) does the same arithmetic, but compiles the update again with every new shape:
    for MiniLM-L6 that is 13 of each new bucket's 21 s (bench/GD_STEP.md, "Two graphs a step").

    With micro_batches > 1 the batch is cut into that many equal slices along its first axis; each
    slice goes through the teacher and the student's forward and backward on its own, the
    gradients are summed in place, and one update uses their mean. Activation memory is that of a
    slice (the graphs are compiled for its shape), the update is the whole batch's when every loss
    term is a mean over examples, or over real tokens with the same count in each slice (no padding);
    otherwise each slice's masked means weigh equally, as in TextBrewer's gradient_accumulation_steps.
    Each slice draws its own dropout masks (`set_dropout_step`'s micro_batch).

    Args:
        train_cell (BertTrainWithLossScaleCell): the network, optimizer and loss scale.
        micro_batches (int): slices per batch; must divide the batch size (the config checks it).
        seed, rank (int): the run's seed and data-parallel rank, for the dropout masks.
        before_step (Cell or None): run with no inputs before each step's first forward pass: the
            pruning masks' refresh (`src.prune.apply.cache_masks`), computed once for all slices.

    Call with (step, teacher, schedule, teacher_batch, batch): step is the number of steps done
    before this one; teacher a teacher source (src/distill/teacher.py); schedule the loss's (4,)
    float32 Tensor of scheduled values; teacher_batch and batch the two models' input tuples
    (`teacher_and_student_batches`). Returns (loss float, components (n,) numpy array, overflow
    bool, loss scale used float); loss and components are the mean over slices.
    """

    def __init__(self, train_cell, micro_batches=1, seed=0, rank=0, before_step=None):
        self.train_cell = train_cell
        self.micro_batches = micro_batches
        self.seed, self.rank = seed, rank
        self.before_step = before_step
        self.gradients = _Gradients(train_cell) if micro_batches == 1 else _AccumulateGradients(train_cell)
        self.update = _ApplyGradients(train_cell, micro_batches)

    def set_train(self, mode=True):
        for cell in (self.train_cell, self.gradients, self.update):
            cell.set_train(mode)

    def __call__(self, step, teacher, schedule, teacher_batch, batch):
        if self.before_step is not None:
            self.before_step()
        if self.micro_batches == 1:
            set_dropout_step(self.seed, step, self.rank)
            loss, components, grads = self.gradients(teacher(*teacher_batch), schedule, *batch)
            overflow, scale = self.update(ms.mutable(grads))  # mutable: the update is compiled once
            return float(loss.asnumpy()), components.asnumpy(), bool(overflow.asnumpy()), float(scale.asnumpy())
        losses, parts = [], []
        for index in range(self.micro_batches):
            set_dropout_step(self.seed, step, self.rank, micro_batch=index)
            first = Tensor(1.0 if index == 0 else 0.0, ms.float32)
            loss, components = self.gradients(first, teacher(*self._slice(teacher_batch, index)), schedule,
                                              *self._slice(batch, index))
            losses.append(float(loss.asnumpy()))
            parts.append(components.asnumpy())
        overflow, scale = self.update(ms.mutable(tuple(self.gradients.accumulated)))
        return float(np.mean(losses)), np.mean(parts, axis=0), bool(overflow.asnumpy()), float(scale.asnumpy())

    def _slice(self, inputs, index):
        """Slice `index` of every Tensor input (each has the batch first); anything else, such as a
        multi-task batch's task index, passes as it is."""
        sliced = []
        for value in inputs:
            if isinstance(value, Tensor):
                size = value.shape[0] // self.micro_batches
                value = value[index * size:(index + 1) * size]
            sliced.append(value)
        return tuple(sliced)


def make_scale_update_cell(loss_scale_config):
    """Dynamic loss scaling, or a fixed scale of 1 when disabled."""
    if not loss_scale_config.enabled:
        return nn.FixedLossScaleUpdateCell(1.0)
    return nn.DynamicLossScaleUpdateCell(loss_scale_value=loss_scale_config.init_value,
                                         scale_factor=loss_scale_config.factor,
                                         scale_window=loss_scale_config.window)
