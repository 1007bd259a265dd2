"""Training the backbones with Ray Train (jobs.train's entry point: ``trainer.train``).

    trainer       the driver: data checks, TorchTrainer, best-checkpoint export, test evaluation
    loop          the Ray Train worker loop: epochs, DDP, reports, checkpoints, resume
    epoch         one pass of the training / evaluation step (plain PyTorch, no Ray)
    batching      length-grouped batches; optimization: optimizer, schedule, early stopping
"""
