"""Multi-stage workflows, each the library side of one job of the same name.

    pipeline        jobs.pipeline: demo data -> preprocess -> train -> fusion -> report -> Serve
                    (pipeline_plan checks the stage files, pipeline_report writes report.md,
                    serve_check deploys the app and asks it once)
    crossval        jobs.crossval: speaker-grouped k-fold cross-validation, one Ray Train run per fold
    evaluate        jobs.evaluate: a trained model on a MELD-layout csv it has never seen
"""
