"""Late fusion of the frozen backbones' logits, searched with Ray Tune + OptunaSearch.

    logit_cache   both backbones' logits on every split, computed once with Ray Data
    fit           one fusion fit (focal loss, early stopping) on cached logits
    search        the Tune/Optuna sweep of Enhanced Late Fusion trials
    tune          jobs.tune_fusion's entry point, ``tune_fusion``: cache, Late Fusion,
                  sweep, test evaluation, export
    comparison    the four-model comparison table and plots
"""
