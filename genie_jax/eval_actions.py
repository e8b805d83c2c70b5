"""What the latent actions are, measured on held-out clips: codebook usage and, where the dataset knows the true
actions, how well latent codes line up with them (NMI, ARI, best one-to-one mapping, held-out probe).

Intervals come from a bootstrap over clips (neighbouring transitions of one clip are not independent).
"""

from __future__ import annotations

import numpy as np

from genie_jax.metrics.alignment import adjusted_rand_index, best_one_to_one_mapping, code_usage, normalized_mutual_info
from genie_jax.metrics.probe import CodeProbe, majority_mapping
from genie_jax.metrics.stats import bootstrap_ci


def _known(codes_BT: np.ndarray, true_BT: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Codes and true actions of the transitions (of clips ``rows``) whose true action is known (>= 0)."""
    codes, true = codes_BT[rows], true_BT[rows]
    known = true >= 0
    return codes[known], true[known]


def usage_report(codes_BT: np.ndarray, num_actions: int, *, resamples: int = 200, seed: int = 0) -> dict:
    """Per-code frequency, perplexity (with a bootstrap interval over clips) and dead codes of the LAM's codes."""
    usage = code_usage(codes_BT, num_actions)
    perplexity = bootstrap_ci(len(codes_BT), lambda rows: code_usage(codes_BT[rows], num_actions)["perplexity"],
                              resamples=resamples, seed=seed)
    return {"transitions": int(codes_BT.size), "num_actions": num_actions, "frequency": usage["frequency"],
            "perplexity": perplexity, "dead_codes": usage["dead_codes"],
            "dead_code_ids": [a for a, f in enumerate(usage["frequency"]) if f == 0]}


def alignment_report(codes_BT: np.ndarray, true_BT: np.ndarray, fit_codes_BT: np.ndarray, fit_true_BT: np.ndarray,
                     meanings: tuple[str, ...], *, resamples: int = 200, seed: int = 0) -> dict | None:
    """Latent code vs true action on held-out clips (B, T-1); None when no true action is known.

    The probe is fitted on other clips (``fit_*``, e.g. the train split) and scored on these.
    """
    all_rows = np.arange(len(codes_BT))
    codes, true = _known(codes_BT, true_BT, all_rows)
    fit_codes, fit_true = _known(fit_codes_BT, fit_true_BT, np.arange(len(fit_codes_BT)))
    if true.size == 0:
        return None

    def stat(fn):
        return bootstrap_ci(len(codes_BT), lambda rows: fn(*_known(codes_BT, true_BT, rows)), resamples=resamples,
                            seed=seed)

    mapping, _ = best_one_to_one_mapping(true, codes)
    report = {
        "transitions": int(true.size),
        "nmi": stat(lambda c, t: normalized_mutual_info(t, c)),
        "ari": stat(lambda c, t: adjusted_rand_index(t, c)),
        "best_one_to_one": {"mapping": {str(k): _name(v, meanings) for k, v in mapping.items()},
                            "accuracy": stat(lambda c, t: best_one_to_one_mapping(t, c)[1])},
        "majority_true_action": {str(k): _name(v, meanings) for k, v in majority_mapping(true, codes).items()},
    }
    if fit_true.size:
        probe = CodeProbe.fit(fit_true, fit_codes)
        report["probe"] = {
            "method": "lookup table latent code -> most frequent true action, fitted on the probe clips and scored "
                      "on the evaluated clips (the best any probe of a discrete code can do)",
            "fit_transitions": int(fit_true.size),
            "accuracy": stat(lambda c, t: probe.accuracy(t, c)),
            "chance": stat(lambda c, t: probe.chance(t)),
        }
    return report


def _name(action: int, meanings: tuple[str, ...]) -> str:
    return meanings[action] if 0 <= action < len(meanings) else str(action)
