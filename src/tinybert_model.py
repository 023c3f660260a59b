"""BERT encoder and sequence classifier in MindSpore, for TinyBERT distillation.

References:
  Devlin et al. 2018, "BERT: Pre-training of Deep Bidirectional Transformers".
  Jiao et al. 2019, "TinyBERT: Distilling BERT for Natural Language Understanding".

Distillation needs more than the last layer, so `BertModel` returns every hidden state
(embeddings + each layer) and every pre-softmax attention score.

Attribute names (`bert_embedding_lookup`, `bert_encoder.layers.N.attention.attention.query_layer`,
`dense_1`, ...) follow MindSpore's model-zoo BERT checkpoints, so a teacher fine-tuned with the
zoo's BERT loads without renaming; class names follow Hugging Face's `modeling_bert.py`.
"""
import dataclasses
import json
import math

import numpy as np
import mindspore as ms
from mindspore import nn, ops
from mindspore.common.initializer import TruncatedNormal

from src import fused_ops
from src.dropout import StatelessDropout

# gelu_poly: exact GELU through a polynomial erf (|error| < 1.5e-7), for ONNX, which lacks Erf here.
ACTIVATIONS = ("gelu", "gelu_tanh", "gelu_poly", "relu")


@dataclasses.dataclass(frozen=True)
class BertConfig:
    """Shape and regularisation of one BERT encoder (Hugging Face `config.json` field names)."""
    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    compute_type: str = "float32"  # float16 runs the matmuls in half precision (Ascend/GPU)
    # Heads removed by structured pruning (src/prune/structured.py): ((layer, (head, ...)), ...) in
    # original head numbers; given and written as Hugging Face's {"layer": [head, ...]}.
    pruned_heads: tuple = ()
    # On the CPU, GELU and LayerNorm through src/fused_ops.cc when it builds (same results to float
    # tolerance, several times faster); export turns it off. Not a model property: never written out.
    fused_cpu_ops: bool = True

    def __post_init__(self):
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not a multiple of "
                             f"num_attention_heads {self.num_attention_heads}")
        if self.hidden_act not in ACTIVATIONS:
            raise ValueError(f"hidden_act {self.hidden_act!r} is not one of {ACTIVATIONS}")
        if self.compute_type not in ("float32", "float16"):
            raise ValueError(f"compute_type {self.compute_type!r} must be float32 or float16")
        object.__setattr__(self, "pruned_heads", self._normalised_pruned_heads())

    def _normalised_pruned_heads(self):
        """pruned_heads as sorted ((layer, (heads...)), ...) from a dict or pairs, checked against the shape."""
        items = self.pruned_heads.items() if isinstance(self.pruned_heads, dict) else self.pruned_heads
        layers = {}
        for layer, heads in items:
            layers.setdefault(int(layer), set()).update(int(head) for head in heads)
        for layer, heads in layers.items():
            if not 0 <= layer < self.num_hidden_layers:
                raise ValueError(f"pruned_heads: layer {layer} is not in 0..{self.num_hidden_layers - 1}")
            if not all(0 <= head < self.num_attention_heads for head in heads):
                raise ValueError(f"pruned_heads: layer {layer} names heads outside 0..{self.num_attention_heads - 1}")
            if len(heads) == self.num_attention_heads:
                raise ValueError(f"pruned_heads: all {self.num_attention_heads} heads of layer {layer} are removed; "
                                 "keep at least one")
        return tuple((layer, tuple(sorted(heads))) for layer, heads in sorted(layers.items()) if heads)

    def num_heads_in_layer(self, layer_index):
        """Attention heads left in encoder layer `layer_index` (0-based) after structured pruning."""
        return self.num_attention_heads - len(dict(self.pruned_heads).get(layer_index, ()))

    @classmethod
    def from_dict(cls, values):
        """Build from a dict, ignoring keys that are not BERT shape fields (as HF config.json has)."""
        names = {f.name for f in dataclasses.fields(cls)}
        hidden_act = values.get("hidden_act", "gelu")
        values = dict(values, hidden_act={"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh"}
                      .get(hidden_act, hidden_act))
        return cls(**{k: v for k, v in values.items() if k in names})

    @classmethod
    def from_json_file(cls, path):
        with open(path, encoding="utf-8") as f:
            return cls.from_dict(json.load(f))

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    def for_inference(self):
        """The same network without dropout: teachers and evaluation use this."""
        return self.replace(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)

    def for_dynamic_shapes(self):
        """The same network for a graph compiled with `Cell.set_inputs` of unknown sizes: MindSpore's own
        ops only, as MindSpore 2.10 cannot infer the shapes of a custom op (src/fused_ops.py) at run time."""
        return self.replace(fused_cpu_ops=False)

    def to_dict(self):
        values = dataclasses.asdict(self)
        values.pop("pruned_heads")
        values.pop("fused_cpu_ops")
        if self.pruned_heads:  # only then: an unpruned model's config.json stays as it was
            values["pruned_heads"] = {str(layer): list(heads) for layer, heads in self.pruned_heads}
        return values


def _dense(config, in_channels, out_channels):
    dense = nn.Dense(in_channels, out_channels, weight_init=TruncatedNormal(config.initializer_range))
    if config.compute_type == "float16":
        dense.to_float(ms.float16)
    return dense


def _uses_fused_ops(config):
    return config.fused_cpu_ops and config.compute_type == "float32" and fused_ops.available()


def _layer_norm(config, width):
    # LayerNorm stays in float32 under float16 compute: its variance overflows half precision.
    if _uses_fused_ops(config):
        return fused_ops.LayerNorm(width, config.layer_norm_eps)
    return nn.LayerNorm((width,), epsilon=config.layer_norm_eps)


def _erf_of_nonnegative(a):
    """erf(a) for a >= 0 by Abramowitz & Stegun 7.1.26: exp, mul and add only."""
    t = ops.ones_like(a) / (1.0 + 0.3275911 * a)  # RealDiv: ONNX export lacks Reciprocal
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    return 1.0 - poly * ops.exp(-a * a)


def _activation(name, x):
    if name == "gelu":
        # Written out: ops.gelu(approximate="none") defeats the CPU backend's memory reuse
        # (measured: +0.2 GB per BERT-base layer at batch 32, seq 128).
        return 0.5 * x * (1.0 + ops.erf(x * 0.7071067811865476))
    if name == "gelu_tanh":
        return ops.gelu(x, approximate="tanh")
    if name == "gelu_poly":
        # erf is odd, so x * erf(x / sqrt 2) = |x| * erf(|x| / sqrt 2): no Sign op needed either.
        a = ops.abs(x)
        return 0.5 * (x + a * _erf_of_nonnegative(a * 0.7071067811865476))
    return ops.relu(x)


class Activation(nn.Cell):
    """One of ACTIVATIONS, elementwise, written with MindSpore's ops."""

    def __init__(self, name):
        super().__init__()
        self.name = name

    def construct(self, x):
        return _activation(self.name, x)


def _activation_cell(config):
    if config.hidden_act == "gelu" and _uses_fused_ops(config):
        return fused_ops.Gelu()
    return Activation(config.hidden_act)


class SwapMiddleAxes(nn.Cell):
    """(A, B, C, D) -> (A, C, B, D) with MindSpore's Transpose."""

    def construct(self, x):
        return x.transpose(0, 2, 1, 3)


def _swap_middle_axes_cell(config):
    return fused_ops.SwapMiddleAxes() if _uses_fused_ops(config) else SwapMiddleAxes()


class MaskedSoftmax(nn.Cell):
    """softmax(scores + mask_bias) over the last axis, with MindSpore's ops."""

    def construct(self, scores, mask_bias):
        return ops.softmax(scores + mask_bias, axis=-1)


def _masked_softmax_cell(config):
    return fused_ops.MaskedSoftmax() if _uses_fused_ops(config) else MaskedSoftmax()


class BertEmbeddings(nn.Cell):
    """Adds position and token-type embeddings to the word embeddings, then LayerNorm and dropout."""

    def __init__(self, config):
        super().__init__()
        self.token_type_embedding = nn.Embedding(config.type_vocab_size, config.hidden_size,
                                                 embedding_table=TruncatedNormal(config.initializer_range))
        self.full_position_embedding = nn.Embedding(config.max_position_embeddings, config.hidden_size,
                                                    embedding_table=TruncatedNormal(config.initializer_range))
        self.layernorm = _layer_norm(config, config.hidden_size)
        self.dropout = StatelessDropout(p=config.hidden_dropout_prob)

    def construct(self, word_embeddings, token_type_ids):
        seq_length = token_type_ids.shape[1]
        position_ids = ops.arange(seq_length, dtype=ms.int32).reshape(1, seq_length)
        embeddings = (word_embeddings
                      + self.full_position_embedding(position_ids)
                      + self.token_type_embedding(token_type_ids))  # (B, T, H)
        return self.dropout(self.layernorm(embeddings))


class BertSelfAttention(nn.Cell):
    """Multi-head scaled dot-product attention; also returns the pre-softmax scores.

    Layer `layer_index` has config.num_heads_in_layer(layer_index) heads of hidden_size /
    num_attention_heads each: fewer than num_attention_heads once heads are pruned.
    """

    def __init__(self, config, layer_index=0):
        super().__init__()
        self.num_heads = config.num_heads_in_layer(layer_index)
        self.head_size = config.hidden_size // config.num_attention_heads
        self.all_head_size = self.num_heads * self.head_size
        self.scale = 1.0 / math.sqrt(self.head_size)
        self.query_layer = _dense(config, config.hidden_size, self.all_head_size)
        self.key_layer = _dense(config, config.hidden_size, self.all_head_size)
        self.value_layer = _dense(config, config.hidden_size, self.all_head_size)
        self.dropout = StatelessDropout(p=config.attention_probs_dropout_prob)
        self.swap_middle_axes = _swap_middle_axes_cell(config)
        self.masked_softmax = _masked_softmax_cell(config)
        # BatchMatMul rather than ops.matmul: the latter's gradient transposes its inputs (MatMulExt).
        self.scores_matmul = ops.BatchMatMul(transpose_b=True)
        self.context_matmul = ops.BatchMatMul()

    def _split_heads(self, x):
        batch, seq_length, _ = x.shape
        return self.swap_middle_axes(x.reshape(batch, seq_length, self.num_heads, self.head_size))  # (B, nh, T, hs)

    def construct(self, hidden_states, mask_bias):
        # The scale on the query, not the scores: T / head_size times fewer multiplies, and no score-sized
        # buffer (MindSpore's CPU backend keeps those of a broadcasting Mul to the end of the graph).
        query = self._split_heads(self.query_layer(hidden_states) * self.scale)
        key = self._split_heads(self.key_layer(hidden_states))
        value = self._split_heads(self.value_layer(hidden_states))
        scores = self.scores_matmul(query, key)  # (B, nh, T, T), scaled
        # Softmax in float32 whatever the compute type: exp overflows half precision.
        probs = self.masked_softmax(scores.astype(ms.float32), mask_bias).astype(value.dtype)
        context = self.context_matmul(self.dropout(probs), value)  # (B, nh, T, hs)
        batch, _, seq_length, _ = context.shape
        context = self.swap_middle_axes(context).reshape(batch, seq_length, -1)  # (B, T, nh * hs)
        return context, scores.astype(ms.float32)


class BertSelfOutput(nn.Cell):
    """Projection, dropout, residual and LayerNorm after a sub-layer."""

    def __init__(self, config, in_channels):
        super().__init__()
        self.dense = _dense(config, in_channels, config.hidden_size)
        self.dropout = StatelessDropout(p=config.hidden_dropout_prob)
        self.layernorm = _layer_norm(config, config.hidden_size)

    def construct(self, hidden_states, residual):
        hidden_states = self.dropout(self.dense(hidden_states)).astype(ms.float32)
        return self.layernorm(hidden_states + residual.astype(ms.float32))


class BertAttention(nn.Cell):
    def __init__(self, config, layer_index=0):
        super().__init__()
        self.attention = BertSelfAttention(config, layer_index)
        self.output = BertSelfOutput(config, self.attention.all_head_size)

    def construct(self, hidden_states, mask_bias):
        context, scores = self.attention(hidden_states, mask_bias)
        return self.output(context, hidden_states), scores


class BertLayer(nn.Cell):
    """Attention then feed-forward, each with residual and LayerNorm."""

    def __init__(self, config, layer_index=0):
        super().__init__()
        self.activation = _activation_cell(config)
        self.attention = BertAttention(config, layer_index)
        self.intermediate = _dense(config, config.hidden_size, config.intermediate_size)
        self.output = BertSelfOutput(config, config.intermediate_size)

    def construct(self, hidden_states, mask_bias):
        attention_output, scores = self.attention(hidden_states, mask_bias)
        intermediate = self.activation(self.intermediate(attention_output))
        layer_output = self.output(intermediate, attention_output)
        return layer_output, scores


class BertEncoder(nn.Cell):
    def __init__(self, config):
        super().__init__()
        self.layers = nn.CellList([BertLayer(config, i) for i in range(config.num_hidden_layers)])

    def construct(self, hidden_states, mask_bias):
        all_hidden_states = (hidden_states,)
        all_scores = ()
        for layer in self.layers:
            hidden_states, scores = layer(hidden_states, mask_bias)
            all_hidden_states += (hidden_states,)
            all_scores += (scores,)
        return all_hidden_states, all_scores


class BertModel(nn.Cell):
    """BERT encoder with pooler.

    Inputs, in this order everywhere in the project (Hugging Face's): input_ids, attention_mask,
    token_type_ids, each (B, T) int32; mask 1 = real token.
    Returns a tuple, in this order:
      sequence_output (B, T, H); pooled_output (B, H);
      hidden_states: L+1 tensors (B, T, H), the embeddings first;
      attention_scores: L tensors (B, nh, T, T), scaled QK^T before the mask and softmax, float32.
    """

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.bert_embedding_lookup = nn.Embedding(config.vocab_size, config.hidden_size,
                                                  embedding_table=TruncatedNormal(config.initializer_range))
        self.bert_embedding_postprocessor = BertEmbeddings(config)
        self.bert_encoder = BertEncoder(config)
        # Pooler: the [CLS] token's state through a tanh layer, trained on next-sentence prediction.
        self.dense = _dense(config, config.hidden_size, config.hidden_size)

    def embed(self, input_ids, attention_mask, token_type_ids):
        """Embedding output (B, T, H) and the additive attention-mask bias (B, 1, 1, T)."""
        # Masked keys get a large negative bias so softmax gives them ~0 weight.
        mask_bias = (1.0 - attention_mask.astype(ms.float32)).reshape(
            attention_mask.shape[0], 1, 1, -1) * -10000.0
        embeddings = self.bert_embedding_postprocessor(self.bert_embedding_lookup(input_ids), token_type_ids)
        return embeddings, mask_bias

    def pool(self, sequence_output):
        return ops.tanh(self.dense(sequence_output[:, 0])).astype(ms.float32)

    def construct(self, input_ids, attention_mask, token_type_ids):
        embeddings, mask_bias = self.embed(input_ids, attention_mask, token_type_ids)
        hidden_states, attention_scores = self.bert_encoder(embeddings, mask_bias)
        hidden_states = tuple(h.astype(ms.float32) for h in hidden_states)
        sequence_output = hidden_states[-1]
        return sequence_output, self.pool(sequence_output), hidden_states, attention_scores


class BertForSequenceClassification(nn.Cell):
    """BertModel + dropout + linear head over the pooled output.

    Inputs as BertModel. Returns (logits (B, num_labels), hidden_states, attention_scores).
    num_labels = 1 is regression (STS-B): the single logit is the prediction.
    """

    def __init__(self, config, num_labels, classifier_dropout=None):
        super().__init__()
        self.num_labels = num_labels
        self.bert = BertModel(config)
        dropout = config.hidden_dropout_prob if classifier_dropout is None else classifier_dropout
        self.dropout = StatelessDropout(p=dropout)
        self.dense_1 = _dense(config, config.hidden_size, num_labels)

    task = "sequence_classification"

    def head(self, sequence_output, pooled_output):
        """Logits (B, num_labels) from the encoder's outputs; every task model has this method."""
        return self.dense_1(self.dropout(pooled_output)).astype(ms.float32)

    def construct(self, input_ids, attention_mask, token_type_ids):
        sequence_output, pooled_output, hidden_states, attention_scores = self.bert(
            input_ids, attention_mask, token_type_ids)
        return self.head(sequence_output, pooled_output), hidden_states, attention_scores


class LogitsOnly(nn.Cell):
    """A task model with only its head's logits as output (see each model's `head`: (B, C),
    (B, T, C), or (B, 2, T) start/end for QA): what evaluation and export need."""

    def __init__(self, classifier):
        super().__init__(auto_prefix=False)
        self.classifier = classifier

    def construct(self, input_ids, attention_mask, token_type_ids):
        sequence_output, pooled_output, _, _ = self.classifier.bert(input_ids, attention_mask, token_type_ids)
        return self.classifier.head(sequence_output, pooled_output)


def inference_function(network):
    """`network` in inference mode as a compiled MindSpore function: `ms.jit` of its construct.

    The function takes and returns what `network` does (MindSpore tensors) and runs the same graph in
    GRAPH mode, compiled on the first call of each input shape. What it saves is MindSpore 2.10's
    `Cell.__call__`, which walks every sub-cell on every call to set its compile phase: about 1 ms of a
    5-7 ms batch-1 call of a 2-layer student (bench/LATENCY.md, "Cell calls and jit functions"). For
    fixed shapes; inputs of many shapes (predict's batches) are better served by one dynamic-shape Cell.

    The network is set to inference mode (dropout off); keep it so, as each new shape compiles the
    mode it then has. Build the function once the weights are loaded: a parameter given new data with
    `set_data` after the first call is not seen by the compiled graph.
    """
    network.set_train(False)
    return ms.jit(network.construct)


def count_parameters(cell, prefix=""):
    """Number of scalar parameters whose name starts with `prefix`."""
    return int(sum(np.prod(p.shape) for name, p in cell.parameters_and_names() if name.startswith(prefix)))


class BertForTokenClassification(BertForSequenceClassification):
    """BertModel + dropout + linear head at every position: NER and other tagging tasks.

    The same layers as BertForSequenceClassification, its head applied to the sequence output.
    Inputs as BertModel. Returns (logits (B, T, num_labels), hidden_states, attention_scores).
    The head is `dense_1`, as in the zoo's BertNER checkpoints; the pooler is kept but unused.
    """

    task = "token_classification"

    def head(self, sequence_output, pooled_output):
        """Logits (B, T, num_labels) at every position."""
        return self.dense_1(self.dropout(sequence_output)).astype(ms.float32)


class BertForQuestionAnswering(nn.Cell):
    """BertModel + a linear layer to two scores per position: extractive QA (SQuAD).

    Inputs as BertModel. Returns (start_logits (B, T), end_logits (B, T), hidden_states,
    attention_scores). The head is `dense1`, as in the zoo's BertSquad checkpoints, with no
    dropout, as there and in BERT's SQuAD head; the pooler is kept but unused.
    """

    def __init__(self, config):
        super().__init__()
        self.bert = BertModel(config)
        self.dense1 = _dense(config, config.hidden_size, 2)

    task = "question_answering"

    def head(self, sequence_output, pooled_output):
        """Span logits (B, 2, T): row 0 scores each position as the answer's start, row 1 as its end,
        so soft targets and the label loss are a softmax over positions."""
        return self.dense1(sequence_output).astype(ms.float32).swapaxes(1, 2)

    def construct(self, input_ids, attention_mask, token_type_ids):
        sequence_output, pooled_output, hidden_states, attention_scores = self.bert(
            input_ids, attention_mask, token_type_ids)
        logits = self.head(sequence_output, pooled_output)  # (B, 2, T)
        return logits[:, 0], logits[:, 1], hidden_states, attention_scores


MLM_HEAD_PREFIX = "cls1."  # the masked-LM head's parameters, named as the zoo's BertPreTraining names them


class BertLMPredictionHead(nn.Cell):
    """BERT's masked-LM head: dense, activation and LayerNorm, then scores against the word embeddings.

    Hugging Face's layout (cls.predictions.transform.dense, transform.LayerNorm, a decoder tied to
    the word embeddings, cls.predictions.bias); the parameter names are those of the zoo's
    GetMaskedLMOutput (`dense`, `layernorm`, `output_bias`).
    """

    def __init__(self, config):
        super().__init__()
        self.activation = _activation_cell(config)
        self.dense = _dense(config, config.hidden_size, config.hidden_size)
        self.layernorm = _layer_norm(config, config.hidden_size)
        self.output_bias = ms.Parameter(ms.Tensor(np.zeros(config.vocab_size, np.float32)), name="output_bias")

    def construct(self, hidden_states, embedding_table):
        """hidden_states (..., H) and the word embedding table (V, H) -> scores (..., V), float32."""
        transformed = self.layernorm(self.activation(self.dense(hidden_states)).astype(ms.float32))
        return ops.matmul(transformed, embedding_table.swapaxes(0, 1)) + self.output_bias


class BertForMaskedLM(nn.Cell):
    """BertModel + the masked-LM head: a score for every vocabulary entry at every position.

    Inputs as BertModel. Returns (prediction_scores (B, T, vocab_size) float32, hidden_states,
    attention_scores). The decoder is the word embedding table itself (tied, as in BERT).
    """

    def __init__(self, config):
        super().__init__()
        self.bert = BertModel(config)
        self.cls1 = BertLMPredictionHead(config)

    def predict(self, sequence_output):
        """Scores (..., vocab_size) of encoder outputs (..., H): the head alone, for callers that
        need only some positions (masked-word prediction)."""
        return self.cls1(sequence_output, self.bert.bert_embedding_lookup.embedding_table)

    def construct(self, input_ids, attention_mask, token_type_ids):
        sequence_output, _, hidden_states, attention_scores = self.bert(input_ids, attention_mask, token_type_ids)
        return self.predict(sequence_output), hidden_states, attention_scores
