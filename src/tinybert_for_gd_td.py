"""Distillation losses as Cells (general distillation, task phases 1 and 2) and the training cell.

TinyBERT (Jiao et al. 2019) distils in two places:
  intermediate layers (general distillation and task phase 1): attention scores of mapped layers,
      and hidden states (embeddings included) projected from student width to teacher width;
  prediction layer (task phase 2): soft cross-entropy of student against teacher logits.
"""
import mindspore as ms
from mindspore import Parameter, Tensor, nn, ops
from mindspore.common.initializer import TruncatedNormal
from mindspore.communication import get_group_size

from src.losses import get_loss
from src.tinybert_model import BertLayer


def layer_mapping(num_student_layers, num_teacher_layers, explicit="uniform"):
    """Pairs (student_layer, teacher_layer) for the intermediate losses.

    Layer 0 is the embedding output (hidden-state loss only); layer i >= 1 is the output of encoder
    layer i, whose attention scores are matched too. "uniform" pairs student layer m with teacher
    layer m * k, k = N_T / N_S, as the paper does; an explicit list gives any other pairing.
    """
    if explicit == "uniform":
        if num_teacher_layers % num_student_layers:
            raise ValueError(f"distill.layer_mapping: uniform mapping needs the teacher's {num_teacher_layers} "
                             f"layers to be a multiple of the student's {num_student_layers}; "
                             "give an explicit list of [student_layer, teacher_layer] pairs instead")
        k = num_teacher_layers // num_student_layers
        return [(m, m * k) for m in range(num_student_layers + 1)]
    if isinstance(explicit, str):
        raise ValueError(f"distill.layer_mapping: {explicit!r} is neither 'uniform' nor a list of "
                         "[student_layer, teacher_layer] pairs")
    pairs = [tuple(pair) for pair in explicit]
    for pair in pairs:
        if len(pair) != 2 or not (0 <= pair[0] <= num_student_layers and 0 <= pair[1] <= num_teacher_layers):
            raise ValueError(f"distill.layer_mapping: pair {list(pair)} must be [student_layer, teacher_layer] "
                             f"with student_layer in 0..{num_student_layers} and "
                             f"teacher_layer in 0..{num_teacher_layers} (0 = embeddings)")
    return pairs


def make_fit_dense(student_config, teacher_config):
    """Projection from student to teacher width, trained in GD and kept for task phase 1."""
    return nn.Dense(student_config.hidden_size, teacher_config.hidden_size,
                    weight_init=TruncatedNormal(student_config.initializer_range))


def freeze(teacher):
    """The teacher is never trained: no gradients, and built without dropout (config.for_inference)."""
    for param in teacher.get_parameters():
        param.requires_grad = False
    teacher.set_train(False)
    return teacher


class _TeacherEmbeddings(nn.Cell):
    def __init__(self, bert):
        super().__init__(auto_prefix=False)
        self.bert = bert

    def construct(self, input_ids, input_mask, segment_ids):
        return self.bert.embed(input_ids, input_mask, segment_ids)


class _TeacherHead(nn.Cell):
    """Pooler and classifier: sequence output -> logits."""

    def __init__(self, classifier):
        super().__init__(auto_prefix=False)
        self.classifier = classifier

    def construct(self, sequence_output):
        return self.classifier.classify(self.classifier.bert.pool(sequence_output))


class TeacherOutputs:
    """The frozen teacher, run before each training step through one compiled layer graph.

    On the CPU backend a graph keeps its own memory for every intermediate tensor, and transposes
    stop that memory being reused within the graph (measured: BERT-base forward at batch 32,
    seq 128 holds 3.4 GB as one graph). So the teacher runs layer by layer through a single
    `BertLayer` graph into which each layer's weights are copied in turn: one layer's activations
    at a time (0.6 GB measured), identical outputs, and nothing kept for the student's backward.
    Returns only what the loss compares: the mapped hidden states and attention scores, or, with
    no layers named, the classifier's logits.
    """

    def __init__(self, teacher, hidden_layers=(), attention_layers=()):
        bert = teacher.bert if hasattr(teacher, "classify") else teacher
        self.hidden_layers = tuple(hidden_layers)
        self.attention_layers = tuple(attention_layers)
        self.embeddings = _TeacherEmbeddings(bert)
        self.layer_graph = BertLayer(bert.config)
        self.layer_graph_params = list(self.layer_graph.get_parameters())
        layers = list(bert.bert_encoder.layers)
        if self.hidden_layers or self.attention_layers:
            layers = layers[:max(self.hidden_layers + self.attention_layers)]
        self.layer_params = [list(layer.get_parameters()) for layer in layers]
        self.head = None if self.hidden_layers or self.attention_layers else _TeacherHead(teacher)
        for cell in (self.embeddings, self.layer_graph, self.head):
            if cell is not None:
                cell.set_train(False)

    def __call__(self, input_ids, input_mask, segment_ids):
        hidden, mask_bias = self.embeddings(input_ids, input_mask, segment_ids)
        kept_hidden, kept_scores = {0: hidden}, {}
        for number, params in enumerate(self.layer_params, start=1):
            for target, source in zip(self.layer_graph_params, params):
                target.set_data(source.data)
            hidden, scores = self.layer_graph(hidden, mask_bias)
            if number in self.hidden_layers:
                kept_hidden[number] = hidden
            if number in self.attention_layers:
                kept_scores[number] = scores
        if self.head is not None:
            return self.head(hidden)
        # mutable: a tuple of tensors passed to a graph is otherwise a constant, recompiled each step
        return ms.mutable((tuple(kept_hidden[t] for t in self.hidden_layers),
                           tuple(kept_scores[t] for t in self.attention_layers)))


class IntermediateDistillationLoss(nn.Cell):
    """Attention-score and hidden-state losses between mapped layers (GD and task phase 1).

    student, teacher: BertModel instances (for task distillation, the classifiers' `.bert`).
    Inputs: the teacher's outputs (from `self.teacher_outputs`), then input_ids, input_mask,
    segment_ids (B, T); further columns (labels) are ignored.
    """

    def __init__(self, student, teacher, fit_dense, distill_config):
        super().__init__()
        s_config, t_config = student.config, teacher.config
        self.student = student
        self.fit_dense = fit_dense
        pairs = layer_mapping(s_config.num_hidden_layers, t_config.num_hidden_layers,
                              distill_config.layer_mapping)
        self.hidden_pairs = tuple(pairs)
        self.attention_pairs = tuple((s, t) for s, t in pairs if s > 0 and t > 0)
        if self.attention_pairs and s_config.num_attention_heads != t_config.num_attention_heads:
            raise ValueError(f"attention-score distillation needs equal head counts: student has "
                             f"{s_config.num_attention_heads}, teacher {t_config.num_attention_heads}; "
                             "set distill.attention_weight=0 or change the student config")
        self.teacher_outputs = TeacherOutputs(teacher, [t for _, t in self.hidden_pairs],
                                              [t for _, t in self.attention_pairs])
        self.attention_loss = get_loss(distill_config.attention_loss, "distill.attention_loss")
        self.hidden_loss = get_loss(distill_config.hidden_loss, "distill.hidden_loss")
        self.attention_weight = distill_config.attention_weight
        self.hidden_weight = distill_config.hidden_weight

    def construct(self, teacher_outputs, input_ids, input_mask, segment_ids, *unused):
        teacher_hidden, teacher_scores = teacher_outputs
        _, _, student_hidden, student_scores = self.student(input_ids, input_mask, segment_ids)
        attention_loss = 0.0
        for i, (s, _) in enumerate(self.attention_pairs):
            attention_loss += self.attention_loss(student_scores[s - 1], teacher_scores[i], input_mask)
        hidden_loss = 0.0
        for i, (s, _) in enumerate(self.hidden_pairs):
            hidden_loss += self.hidden_loss(self.fit_dense(student_hidden[s]), teacher_hidden[i], input_mask)
        return self.attention_weight * attention_loss + self.hidden_weight * hidden_loss


class PredictionDistillationLoss(nn.Cell):
    """Task phase 2: soft loss on logits at a temperature, plus an optional hard-label term.

    student, teacher: BertForSequenceClassification.
    Inputs: the teacher's logits (from `self.teacher_outputs`), input_ids, input_mask, segment_ids, label_ids.
    """

    def __init__(self, student, teacher, distill_config, regression=False):
        super().__init__()
        self.student = student
        self.teacher_outputs = TeacherOutputs(teacher)
        self.soft_loss = get_loss("logits_mse" if regression else distill_config.prediction_loss,
                                  "distill.prediction_loss")
        self.hard_loss = get_loss("hard_mse" if regression else "hard_cross_entropy", "distill.hard_label_weight")
        self.temperature = distill_config.temperature
        self.hard_label_weight = distill_config.hard_label_weight

    def construct(self, teacher_logits, input_ids, input_mask, segment_ids, label_ids):
        student_logits = self.student(input_ids, input_mask, segment_ids)[0]
        loss = self.soft_loss(student_logits, teacher_logits, self.temperature)
        if self.hard_label_weight > 0:
            loss += self.hard_label_weight * self.hard_loss(student_logits, label_ids)
        return loss


class SupervisedLoss(nn.Cell):
    """Plain fine-tuning on gold labels: how the task teacher is trained before distillation."""

    def __init__(self, model, regression=False):
        super().__init__()
        self.model = model
        self.loss = get_loss("hard_mse" if regression else "hard_cross_entropy", "task")

    def construct(self, input_ids, input_mask, segment_ids, label_ids):
        return self.loss(self.model(input_ids, input_mask, segment_ids)[0], label_ids)


class BertTrainWithLossScaleCell(nn.Cell):
    """One optimizer step with dynamic loss scaling and global-norm clipping.

    MindSpore's TrainOneStepWithLossScaleCell reads NPU float-status registers and fails on CPU;
    this cell detects overflow with isfinite on the unscaled gradients, which every backend has.
    On overflow the step is skipped and the scale update cell lowers the scale.
    Returns (loss, overflow, loss scale used for this step).
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

    def construct(self, *inputs):
        loss = self.network(*inputs)
        scale = self.loss_scale * 1.0  # a copy: the update below must not change what we return
        grads = self.grad(self.network, self.weights)(*inputs, ops.fill(loss.dtype, loss.shape, scale))
        if self.distributed:
            grads = self.grad_reducer(grads)
        grads = tuple(g / scale for g in grads)
        finite = ops.stack([ops.isfinite(g).all() for g in grads]).all()
        overflow = ops.logical_not(finite)
        if self.distributed:
            overflow = self.all_reduce(overflow.astype(ms.float32)) > 0
        overflow = self.scale_update_cell(self.loss_scale, overflow)
        if not overflow:
            grads = ops.clip_by_global_norm(grads, self.clip_norm)
            loss = ops.depend(loss, self.optimizer(grads))
        return loss, overflow, scale


def make_scale_update_cell(loss_scale_config):
    """Dynamic loss scaling, or a fixed scale of 1 when disabled."""
    if not loss_scale_config.enabled:
        return nn.FixedLossScaleUpdateCell(1.0)
    return nn.DynamicLossScaleUpdateCell(loss_scale_value=loss_scale_config.init_value,
                                         scale_factor=loss_scale_config.factor,
                                         scale_window=loss_scale_config.window)
