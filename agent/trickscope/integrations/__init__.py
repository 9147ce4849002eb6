"""Callbacks that attach trickscope to the trainers people use, in one line.

- :mod:`trickscope.integrations.lightning`: ``Trainer(callbacks=[TrickscopeCallback(project=)])``
  for Lightning (``pip install 'trickscope[lightning]'``);
  :mod:`trickscope.integrations.pytorch_lightning` for the older ``pytorch_lightning`` package.
- :mod:`trickscope.integrations.transformers`: ``Trainer(callbacks=[TrickscopeCallback()])`` for
  the Hugging Face Trainer (``pip install 'trickscope[transformers]'``).

Each submodule imports its framework; this package imports none of them.
"""
