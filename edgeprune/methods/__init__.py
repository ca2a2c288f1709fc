"""The compression methods of the literature beside structured channel pruning (docs/methods.md).

One module per method, each with its paper and when to use it:

- :mod:`~edgeprune.methods.deep_compression`: magnitude pruning + k-means sharing + Huffman (stored bytes);
- :mod:`~edgeprune.methods.lowrank`: low-rank factorisation with energy transfer (LRPET-style);
- :mod:`~edgeprune.methods.sparse_training`: RigL and sparse connectivity learning (training-time sparsity);
- :mod:`~edgeprune.methods.snip_init`: SNIP pruning at initialisation;
- :mod:`~edgeprune.methods.rethinking`: train the pruned architecture from scratch vs fine-tune it;
- :mod:`~edgeprune.methods.iterative`: iterative prune / fine-tune cycles with re-estimated importance;
- :mod:`~edgeprune.methods.slimming`: network slimming (L1 on BN scales, then BN-scale channel pruning).

Nothing heavy is imported here; import the module you need.
"""
from __future__ import annotations

METHODS: dict[str, dict[str, str]] = {
    "deep-compression": {
        "module": "edgeprune.methods.deep_compression",
        "does": "unstructured magnitude pruning + per-layer k-means weight sharing + Huffman coding, stored as one .epdc file",
        "when": "the limit is stored bytes (flash, OTA updates); changes size, not latency on dense engines",
        "paper": "Han, Mao & Dally 2016, Deep Compression (ICLR); Han et al. 2015, Learning both Weights and Connections (NeurIPS)",
        "structured": "no",
    },
    "lowrank": {
        "module": "edgeprune.methods.lowrank",
        "does": "replaces a conv/linear by a thin kxk conv + 1x1 conv (truncated SVD), kept singular values rescaled to keep the energy",
        "when": "wide layers whose weights have a fast-decaying spectrum; a rank is a dense inner width, so it speeds up dense engines",
        "paper": "Guo, Lin et al., Compact Model Training by Low-Rank Projection with Energy Transfer (LRPET; github.com/BZQLin/LRPET)",
        "structured": "yes (dense)",
    },
    "rigl": {
        "module": "edgeprune.methods.sparse_training",
        "does": "dynamic sparse training at a fixed parameter count: drop smallest |w|, grow largest |grad| every dT steps",
        "when": "training (or long fine-tuning) a sparse model when the dense one is too big to train; unstructured",
        "paper": "Evci et al. 2020, Rigging the Lottery: Making All Tickets Winners (ICML)",
        "structured": "no",
    },
    "scl": {
        "module": "edgeprune.methods.sparse_training",
        "does": "learned binary masks: trainable scores through a unit step with an identity straight-through estimator, plus a connection-count regulariser",
        "when": "let training choose the per-layer sparsity instead of a hand-set schedule; unstructured",
        "paper": "Tang et al. 2022, Automatic Sparse Connectivity Learning for Neural Networks (SCL, IEEE TNNLS)",
        "structured": "no",
    },
    "snip": {
        "module": "edgeprune.methods.snip_init",
        "does": "prunes connections once at initialisation by connection sensitivity |g*w| on one batch, then trains the sparse net",
        "when": "no pretrained model and a training budget: choose the sparse topology before training; unstructured",
        "paper": "Lee, Ajanthan & Torr 2019, SNIP: Single-shot Network Pruning based on Connection Sensitivity (ICLR)",
        "structured": "no",
    },
    "rethinking": {
        "module": "edgeprune.methods.rethinking",
        "does": "baseline: the pruned architecture trained from scratch vs the pruned weights fine-tuned, both measured",
        "when": "to check whether inherited weights matter for a pruned architecture (they do at short budgets)",
        "paper": "Liu et al. 2019, Rethinking the Value of Network Pruning (ICLR)",
        "structured": "yes",
    },
    "iterative": {
        "module": "edgeprune.methods.iterative",
        "does": "repeated prune / short fine-tune cycles, importance re-estimated every cycle (the planner's iterative schedule)",
        "when": "high compression: small steps lose less accuracy than one shot, at the cost of more fine-tuning",
        "paper": "Molchanov et al. 2017, Pruning CNNs for Resource Efficient Inference (ICLR); Molchanov et al. 2019, Importance Estimation for Neural Network Pruning (CVPR)",
        "structured": "yes",
    },
    "slimming": {
        "module": "edgeprune.methods.slimming",
        "does": "fine-tunes with an L1 penalty on BN scales, then removes the channels whose scale fell below one global threshold",
        "when": "BN networks with a fine-tuning budget: training itself picks the channels to remove",
        "paper": "Liu et al. 2017, Learning Efficient Convolutional Networks through Network Slimming (ICCV)",
        "structured": "yes",
    },
}

__all__ = ["METHODS"]
