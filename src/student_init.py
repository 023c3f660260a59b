"""Initialise a student from chosen teacher layers, when the two have the same width."""
from src.checkpoint import named_parameters

LAYER_PREFIX = "bert_encoder.layers."


def teacher_layer_choice(num_student_layers, num_teacher_layers, layers):
    """Teacher layer (1-based) for each student layer: the given list, or evenly spaced ones."""
    if not layers:
        step = num_teacher_layers / num_student_layers
        return [round((i + 1) * step) for i in range(num_student_layers)]
    if len(layers) != num_student_layers or not all(1 <= t <= num_teacher_layers for t in layers):
        raise ValueError(f"student.teacher_layers: {layers} must name {num_student_layers} teacher layers, "
                         f"each between 1 and {num_teacher_layers}")
    return list(layers)


def copy_teacher_layers(student, teacher, layers=()):
    """Copy embeddings, pooler and the chosen encoder layers of `teacher` into `student` (both BertModel)."""
    s, t = student.config, teacher.config
    shape = ("hidden_size", "intermediate_size", "num_attention_heads", "vocab_size", "type_vocab_size")
    differing = [f"{key} {getattr(s, key)} vs {getattr(t, key)}" for key in shape if getattr(s, key) != getattr(t, key)]
    if differing:
        raise ValueError("student.init=teacher_layers needs a student as wide as the teacher; they differ in "
                         + ", ".join(differing))
    chosen = teacher_layer_choice(s.num_hidden_layers, t.num_hidden_layers, layers)
    teacher_params = named_parameters(teacher)
    for name, param in named_parameters(student).items():
        source = name
        if name.startswith(LAYER_PREFIX):
            index, rest = name[len(LAYER_PREFIX):].split(".", 1)
            source = f"{LAYER_PREFIX}{chosen[int(index)] - 1}.{rest}"
        value = teacher_params[source]
        if name.endswith("full_position_embedding.embedding_table") and value.shape != param.shape:
            value = value[:param.shape[0]]
        param.set_data(value.value().copy())
    return chosen
