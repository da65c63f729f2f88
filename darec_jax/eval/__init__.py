"""Full-ranking evaluation."""

from darec_jax.eval.ranking import (
    MASK_SCORE,
    RankingTask,
    evaluate_embeddings,
    metrics_from_scores,
    metrics_from_topk_hits,
    prepare_ranking,
    prepare_split,
)

__all__ = [
    "MASK_SCORE",
    "RankingTask",
    "evaluate_embeddings",
    "metrics_from_scores",
    "metrics_from_topk_hits",
    "prepare_ranking",
    "prepare_split",
]
