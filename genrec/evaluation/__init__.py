from .metrics import metrics_from_ranks, ranks_from_lists, ranks_from_scores
from .evaluate import evaluate
