"""The run process: one module per stage of a run, read in this order.

- :mod:`.pipeline` — :func:`~.pipeline.execute` records a run in the registry around
  :func:`~.pipeline.pipeline`, the whole flow of one run top to bottom;
- :mod:`.data` — the dataset source's rows → examples → held-out split → tokens → the
  strategy's training dataset;
- :mod:`.model` — the model provider's model and tokenizer, a finished run's checkpoint;
- :mod:`.evaluate` — the evaluators on the held-out set (before and after training, ``tuneyard
  eval``);
- :mod:`.train` — the training strategy's trainer, with core's recording, stop and checkpoint
  behaviour applied to it;
- :mod:`.checkpoints` — atomic checkpoint folders and where a resumed run continues;
- :mod:`.lifecycle` — stop requests (``tuneyard stop``, signals), heartbeat, telemetry;
- :mod:`.progress` — how a run reports what it is doing; :mod:`.guard` — calling plugin code;
- :mod:`.__main__` — the entry point of a detached run and of each torchrun rank:
  ``python -m tuneyard.core.run RUN_ID``.

Nothing here is imported by ``tuneyard --help``: torch and transformers load inside functions.
"""
