"""Rewrite two subgraphs of a MindSpore-exported ONNX BERT into the forms ONNX Runtime fuses.

MindSpore 2.10 cannot export Erf, so the exported GELU is `gelu_poly` (src/tinybert_model.py: |x|,
Abramowitz-Stegun's polynomial erf, exp: about 20 element-wise nodes), and its LayerNorm divides a
ReduceSumSquare by the width. ONNX Runtime's graph optimiser recognises neither: at batch 1 their
Mul/Add/... nodes took more of a 2-layer student's time than its matrix products (bench/LATENCY.md).
Each GELU subgraph becomes x * 0.5 * (1 + Erf(x / sqrt 2)) and each ReduceSumSquare / width becomes
ReduceMean(Pow(centred, 2)): the patterns ONNX Runtime's GeluFusion and LayerNormFusion match (the
graphs PyTorch exports), giving one Gelu and one LayerNormalization kernel each. Standard opset-11 ops
only; export_model's reload check compares the rewritten file with the MindSpore Cell.
"""
import math

import numpy as np


def _consumers(graph):
    users = {}
    for node in graph.node:
        for name in node.input:
            users.setdefault(name, []).append(node)
    return users


def graph_constants(graph):
    """{tensor name: numpy value} of the graph's initializers and Constant nodes."""
    from onnx import numpy_helper  # noqa: PLC0415 -- only ONNX export needs onnx
    values = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    values.update({node.output[0]: numpy_helper.to_array(node.attribute[0].t) for node in graph.node
                   if node.op_type == "Constant" and node.attribute[0].name == "value"})
    return values


def _constants(graph):
    """graph_constants, with the outputs of Casts of them too (MindSpore casts its scalars)."""
    values = graph_constants(graph)
    for node in graph.node:
        if node.op_type == "Cast" and node.input[0] in values:
            values[node.output[0]] = values[node.input[0]]
    return values


def _scalar(values, name, expected):
    value = values.get(name)
    return value is not None and value.size == 1 and math.isclose(float(value.flat[0]), expected, rel_tol=1e-6)


def _gelu_output(abs_node, users, values):
    """The tensor 0.5 * (x + |x| * erf(|x| / sqrt 2)) that `abs_node` (Abs(x)) starts, or None.

    gelu_poly ends with Add(x, t) then Mul(by 0.5): the Add that has x as one input and a value computed
    from |x| as the other, followed by a Mul with the constant 0.5."""
    x = abs_node.input[0]
    for add in users.get(x, []):
        if add.op_type != "Add":
            continue
        for mul in users.get(add.output[0], []):
            other = [name for name in mul.input if name != add.output[0]]
            if mul.op_type == "Mul" and len(other) == 1 and _scalar(values, other[0], 0.5):
                return mul.output[0]
    return None


def _between(start, end, users, producer):
    """The nodes on some path from the tensor `start` to the tensor `end` (both excluded as inputs)."""
    forward, frontier = set(), [start]
    while frontier:
        for node in users.get(frontier.pop(), []):
            if id(node) not in forward:
                forward.add(id(node))
                frontier.extend(node.output)
    inside, frontier = {}, [end]
    while frontier:
        node = producer.get(frontier.pop())
        if node is not None and id(node) in forward and id(node) not in inside:
            inside[id(node)] = node
            frontier.extend(node.input)
    return inside


def _unused_constants(graph, removed, users):
    """Constant/Cast nodes whose outputs only fed removed nodes (the polynomial's coefficients)."""
    changed = True
    while changed:
        changed = False
        for node in graph.node:
            if id(node) in removed or node.op_type not in ("Constant", "Cast"):
                continue
            uses = [user for out in node.output for user in users.get(out, [])]
            if uses and all(id(user) in removed for user in uses):
                removed[id(node)] = node
                changed = True


def _is_centred(square_sum, producer):
    """Whether ReduceSumSquare `square_sum` reads Sub(a, ReduceMean(a)) over the same single axis: then,
    divided by the count (what MindSpore's LayerNorm export writes), it is ReduceMean of the square."""
    sub = producer.get(square_sum.input[0])
    mean = producer.get(sub.input[1]) if sub is not None and sub.op_type == "Sub" else None
    if mean is None or mean.op_type != "ReduceMean" or mean.input[0] != sub.input[0]:
        return False
    axes = _attribute(mean, "axes")
    return axes is not None and len(axes) == 1 and axes == _attribute(square_sum, "axes")


def _attribute(node, name):
    return next((list(a.ints) for a in node.attribute if a.name == name), None)


def fuse_for_onnxruntime(model):
    """Rewrite the exported GELU and LayerNorm subgraphs of `model` (an onnx.ModelProto, changed in
    place) into the patterns ONNX Runtime fuses. Returns (GELUs rewritten, LayerNorms rewritten).

    A graph without them (ReLU activations, a model already rewritten) is left as it is."""
    from onnx import helper, numpy_helper  # noqa: PLC0415 -- only ONNX export needs onnx
    graph = model.graph
    users, values = _consumers(graph), _constants(graph)
    producer = {out: node for node in graph.node for out in node.output}
    removed, added, gelus, layer_norms = {}, [], 0, 0

    def constant(name, value):
        graph.initializer.append(numpy_helper.from_array(np.asarray(value, np.float32), name))
        return name

    for node in list(graph.node):
        if node.op_type != "Abs" or id(node) in removed:
            continue
        x, y = node.input[0], _gelu_output(node, users, values)
        if y is None:
            continue
        removed.update(_between(x, y, users, producer))
        tag = f"gelu_{gelus}"
        added.extend([
            helper.make_node("Div", [x, constant(f"{tag}/sqrt2", math.sqrt(2.0))], [f"{tag}/scaled"], name=f"{tag}/Div"),
            helper.make_node("Erf", [f"{tag}/scaled"], [f"{tag}/erf"], name=f"{tag}/Erf"),
            helper.make_node("Add", [f"{tag}/erf", constant(f"{tag}/one", 1.0)], [f"{tag}/one_plus"], name=f"{tag}/Add"),
            helper.make_node("Mul", [x, f"{tag}/one_plus"], [f"{tag}/product"], name=f"{tag}/Mul"),
            helper.make_node("Mul", [f"{tag}/product", constant(f"{tag}/half", 0.5)], [y], name=f"{tag}/Mul_half")])
        gelus += 1

    for node in list(graph.node):
        divs = users.get(node.output[0], []) if node.op_type == "ReduceSumSquare" else []
        if len(divs) != 1 or divs[0].op_type != "Div" or divs[0].input[1] not in values \
                or not _is_centred(node, producer):
            continue
        div, tag = divs[0], f"layer_norm_{layer_norms}"
        removed.update({id(node): node, id(div): div})
        # LayerNorm normalises the last axis; MindSpore writes its index (2 for (B, T, H)), and
        # LayerNormFusion matches only -1 when the input's rank is not in the graph.
        mean = producer[producer[node.input[0]].input[1]]
        mean.attribute.remove(next(a for a in mean.attribute if a.name == "axes"))
        mean.attribute.append(helper.make_attribute("axes", [-1]))
        added.extend([
            helper.make_node("Pow", [node.input[0], constant(f"{tag}/two", 2.0)], [f"{tag}/squared"], name=f"{tag}/Pow"),
            helper.make_node("ReduceMean", [f"{tag}/squared"], [div.output[0]], name=f"{tag}/ReduceMean",
                             axes=[-1], keepdims=1)])
        layer_norms += 1

    _unused_constants(graph, removed, users)
    kept = [node for node in graph.node if id(node) not in removed]
    order = _topological(kept + added, {i.name for i in graph.input} | {i.name for i in graph.initializer})
    del graph.node[:]
    graph.node.extend(order)
    used = {name for node in graph.node for name in node.input}
    for init in [init for init in graph.initializer if init.name not in used]:
        graph.initializer.remove(init)  # the polynomial's coefficients, the LayerNorms' widths
    return gelus, layer_norms


def _topological(nodes, available):
    """`nodes` in an order where each node comes after the producers of its inputs (ONNX requires it)."""
    available, ordered, waiting = set(available) | {""}, [], list(nodes)
    while waiting:
        ready = [node for node in waiting if all(name in available for name in node.input)]
        if not ready:
            raise ValueError("the rewritten ONNX graph has a cycle or a missing input: "
                             f"{sorted({n for node in waiting for n in node.input if n not in available})[:3]}")
        for node in ready:
            ordered.append(node)
            available.update(node.output)
        ready_ids = {id(node) for node in ready}
        waiting = [node for node in waiting if id(node) not in ready_ids]
    return ordered
