"""Evaluation of pretrained backbones (paper sec. 4.2): linear probe, retrieval, fine-tuning, Grad-CAM.

Modules: `features` (evaluation clips, batched frozen features with a disk cache), `linear`
(SVM and softmax probes, `evaluate_checkpoint`), `retrieval` (`recall_at_k`), `finetune`,
`gradcam`, `actions` (a labelled synthetic action dataset), `mechanism` (held-out MAL terms and
InfoNCE of a pretrained model), `demo_eval` (the `make demo` step)
and `cli` (`mcl-fast eval ...`). Submodules are imported on use so `import mcl_fast.eval` stays light.
"""

__all__ = ["features", "linear", "retrieval", "finetune", "gradcam", "actions", "mechanism", "demo_eval", "cli"]
