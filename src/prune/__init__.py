"""Pruning of the BERT encoder: masks, their schedule, counting, baking, compact storage, structure.

Unstructured pruning follows Sanh, Wolf and Rush 2020, "Movement Pruning: Adaptive Sparsity by
Fine-Tuning" (methods and settings named as in its scripts; its l0 method uses the hard-concrete
gates of Louizos, Welling and Kingma 2018, its cubic schedule Zhu and Gupta 2017); structured
pruning removes whole attention heads (importance of Michel, Levy and Neubig 2019, "Are Sixteen
Heads Really Better than One?") and feed-forward rows.
"""
