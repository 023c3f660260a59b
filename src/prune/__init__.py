"""Pruning of the BERT encoder: masks, their schedule, counting, baking, compact storage, structure.

Unstructured pruning follows Sanh, Wolf and Rush 2020, "Movement Pruning: Adaptive Sparsity by
Fine-Tuning" (methods and settings named as in its scripts); structured pruning removes whole
attention heads (importance of Michel, Levy and Neubig 2019) and feed-forward rows.
"""
