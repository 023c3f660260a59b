"""Named features of a BERT layer that intermediate matches compare.

  hidden           hidden_states[l]: (B, T, H); l = 0 is the embedding output
  cls              hidden_states[l][:, 0]: (B, H), the [CLS] state (Patient KD)
  attention        layer l's pre-softmax attention scores (B, nh, T, T), before the mask
  attention_probs  layer l's attention probabilities, padded keys masked out (B, nh, T, T)
  query_relation, key_relation, value_relation
                   layer l's self-attention relation (MiniLM, Wang et al. 2020; MiniLMv2, Wang et
                   al. 2021): the layer's query/key/value projection of its input, split into
                   `relation_heads` heads, and the scaled dot products of each position with every
                   other, Q Q^T / sqrt(d_r): (B, r, T, T) logits, compared with a KL loss.
A feature is computed from one tensor the encoder already has (`feature_source` says which), so
student and teacher share the code and the model returns no more than it did.
"""
import math

import mindspore as ms
from mindspore import ops

FEATURES = ("hidden", "cls", "attention", "attention_probs", "query_relation", "key_relation", "value_relation")
RELATIONS = {"query_relation": "query_layer", "key_relation": "key_layer", "value_relation": "value_layer"}


def feature_source(feature, layer):
    """Where a feature of `layer` comes from: ("hidden", index into hidden_states) or ("scores", index
    into attention_scores). Relations read the layer's input, hidden_states[layer - 1]."""
    if feature in ("hidden", "cls"):
        return "hidden", layer
    if feature in ("attention", "attention_probs"):
        return "scores", layer - 1
    return "hidden", layer - 1


def relation_logits(projected, heads):
    """(B, T, H) projection -> (B, heads, T, T) scaled self dot products of each head's slice."""
    batch, seq_length, width = projected.shape
    head_size = width // heads
    split = projected.reshape(batch, seq_length, heads, head_size).transpose(0, 2, 1, 3)  # (B, r, T, d)
    return ops.matmul(split, split.swapaxes(-1, -2)) / math.sqrt(head_size)


def feature_from(feature, source, mask_bias, projection=None, heads=1):
    """The feature computed from its source tensor (see `feature_source`).

    mask_bias: (B, 1, 1, T) additive mask, 0 on real keys; projection: the layer's query, key or
    value Dense, for relations.
    """
    if feature == "cls":
        return source[:, 0]
    if feature == "attention_probs":
        return ops.softmax(source + mask_bias, axis=-1)
    if feature in RELATIONS:
        return relation_logits(projection(source).astype(ms.float32), heads)
    return source


def relation_projection(encoder, feature, layer):
    """The query, key or value Dense of encoder layer `layer` (1-based) for a relation feature."""
    attention = encoder.bert_encoder.layers[layer - 1].attention.attention
    return getattr(attention, RELATIONS[feature])
